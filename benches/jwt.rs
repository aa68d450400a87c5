//! `JwtAuth::verify`: what the handshake spends on a token, for HS256, ES256 and RS256.
//! The ES256 and RS256 keys are the test fixtures (`tests/fixtures/*.pem`).
//!
//! ```text
//! cargo bench --bench jwt
//! ```

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tower_realtime::JwtAuth;

const SECRET: &str = "tower-realtime-demo-secret-change-me-please";

fn claims() -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({ "sub": "user-42", "exp": now + 3600, "iat": now, "role": "member" })
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt/verify");

    let hs = JwtAuth::hs256(SECRET);
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(hs.verify(&token).unwrap().user_id(), Some("user-42"));
    group.bench_function("hs256", |b| b.iter(|| hs.verify(black_box(&token)).unwrap()));

    let es = JwtAuth::es256_pem(fixture("ec_public.pem")).unwrap();
    let key = EncodingKey::from_ec_pem(&fixture("ec_private.pem")).unwrap();
    let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(), &key).unwrap();
    assert_eq!(es.verify(&token).unwrap().user_id(), Some("user-42"));
    group.bench_function("es256", |b| b.iter(|| es.verify(black_box(&token)).unwrap()));

    let rs = JwtAuth::rs256_pem(fixture("rsa_public.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap();
    let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims(), &key).unwrap();
    assert_eq!(rs.verify(&token).unwrap().user_id(), Some("user-42"));
    group.bench_function("rs256", |b| b.iter(|| rs.verify(black_box(&token)).unwrap()));

    // A refusal must not cost more than an acceptance.
    let bad = format!(
        "{}x",
        &jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"another secret, of at least 32 bytes"),
        )
        .unwrap()
    );
    assert!(hs.verify(&bad).is_err());
    group.bench_function("hs256_bad_signature", |b| {
        b.iter(|| hs.verify(black_box(&bad)).is_err())
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = verify
}
criterion_main!(benches);
