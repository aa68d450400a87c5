// Waiting helpers shared by the socket.io-client tests.

// The next `event` of `emitter` (its argument, or the array of several), within `ms`.
export function once(emitter, event, ms = 4000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(t);
      resolve(args.length > 1 ? args : args[0]);
    });
  });
}

// The socket, once connected.
export async function connected(s) {
  if (!s.connected) await once(s, 'connect');
  return s;
}
