//! The `Event` derive of `tower-realtime`: declares a type as an event, with its name and, for
//! an event a client sends, the type of its ack. Use it through `tower_realtime::Event`
//! (feature `typed`, on by default), where it is documented.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{parse_macro_input, spanned::Spanned, Data, DeriveInput, Fields, LitStr, Path, Type};

/// Declares an event: `#[event(name = "joinRoom", ack = JoinedRoom)]` for one a client sends
/// (the handler must return the ack type), `#[event(name = "userJoined")]` for one the server
/// sends. `#[event(crate = "path")]` names the `tower_realtime` crate when it is not at
/// `::tower_realtime`. The payload is the type itself; a unit struct is an event without one.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(input).unwrap_or_else(|e| e.to_compile_error()).into()
}

struct Attrs {
    name: Option<LitStr>,
    ack: Option<Type>,
    krate: Option<Path>,
}

fn attrs(input: &DeriveInput) -> syn::Result<Attrs> {
    let mut out = Attrs {
        name: None,
        ack: None,
        krate: None,
    };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                out.name = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("ack") {
                out.ack = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("crate") {
                let path: LitStr = meta.value()?.parse()?;
                out.krate = Some(path.parse()?);
            } else {
                return Err(meta.error("expected `name = \"..\"`, `ack = Type` or `crate = \"..\"`"));
            }
            Ok(())
        })?;
    }
    Ok(out)
}

fn expand(input: DeriveInput) -> syn::Result<Tokens> {
    let Attrs { name, ack, krate } = attrs(&input)?;
    let Some(name) = name else {
        return Err(syn::Error::new(
            input.ident.span(),
            "an event needs its name: #[event(name = \"..\")]",
        ));
    };
    if name.value().is_empty() {
        return Err(syn::Error::new(name.span(), "an event's name must not be empty"));
    }
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "an event type has no generic parameters nor lifetimes: it is declared once, with one TypeScript shape",
        ));
    }
    let krate = krate.unwrap_or_else(|| syn::parse_quote!(::tower_realtime));
    let ident = &input.ident;
    let payload = !matches!(&input.data, Data::Struct(s) if matches!(s.fields, Fields::Unit));
    let direction = match ack {
        Some(ack) => quote! {
            impl #krate::ClientEvent for #ident {
                type Ack = #ack;
            }
        },
        None => quote! {
            impl #krate::ServerEvent for #ident {}
        },
    };
    Ok(quote! {
        impl #krate::Event for #ident {
            const NAME: &'static str = #name;
            const PAYLOAD: bool = #payload;
        }
        #direction
    })
}
