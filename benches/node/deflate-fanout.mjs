// Compressed fan-out against the chat demo, for the figures the Rust load generator cannot
// take (it speaks no permessage-deflate): N `ws` clients (permessage-deflate offered or not)
// join one room, one of them sends `message` events of a realistic mixed chat stream at a
// fixed rate, and this prints the deliveries, the bytes the clients read off their sockets,
// and the server's CPU per delivery (from /proc/<pid>/stat) over the measured window.
//
//   PORT=3400 MAX_CONNECTIONS_PER_USER=100000 target/release/examples/chat &   # COMPRESSION=off for the plain run
//   node benches/node/deflate-fanout.mjs --url http://127.0.0.1:3400 --pid $! --conns 1000 --rate 30 --seconds 8 [--plain] [--long]
//
// Run from a directory where `ws` resolves (NODE_PATH=tests/node/node_modules).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(process.env.NODE_PATH ? process.env.NODE_PATH + '/' : import.meta.url);
const WebSocket = require('ws');

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : true]);
    return acc;
  }, []),
);
const base = args.url || 'http://127.0.0.1:3400';
const pid = args.pid;
const conns = Number(args.conns || 1000);
const rate = Number(args.rate || 20);
const seconds = Number(args.seconds || 8);
const plain = !!args.plain;
// `--long`: only pasted paragraphs (80 to 180 words: every one above the threshold).
const long = !!args.long;

const clk = 100; // USER_HZ
const cpu = () => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / clk;
};

// A mixed chat stream: short lines, sentences, a pasted paragraph now and then (JSON events
// of about 120 to 1,200 bytes on the wire uncompressed).
const words = 'the a to and of in is it you that we for on are with this be have not at but can will just so what about when'.split(' ');
let seed = 7;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
function line() {
  const r = long ? 0.85 + rnd() * 0.15 : rnd();
  const n = r < 0.5 ? 3 + Math.floor(rnd() * 8) : r < 0.85 ? 15 + Math.floor(rnd() * 25) : 80 + Math.floor(rnd() * 100);
  return Array.from({ length: n }, () => words[Math.floor(rnd() * words.length)]).join(' ');
}

const token = async (user) => (await (await fetch(`${base}/login`, {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user }),
})).json()).token;

const ws = base.replace('http', 'ws') + '/ws?token=';
const tok = await token('bench');
const clients = [];
let delivered = 0;
let counting = false;
for (let i = 0; i < conns; i++) {
  const c = new WebSocket(ws + tok, { perMessageDeflate: plain ? false : { clientNoContextTakeover: true, serverNoContextTakeover: true } });
  await new Promise((res, rej) => { c.once('open', res); c.once('error', rej); });
  c.on('message', (data) => {
    if (counting && String(data).startsWith('{"event":"message"')) delivered++;
  });
  c.send(JSON.stringify({ event: 'joinRoom', data: 'bench', id: 1 }));
  clients.push(c);
}
const agreed = clients.filter((c) => /permessage-deflate/.test(c.extensions)).length;
await new Promise((r) => setTimeout(r, 1500));
const read0 = clients.reduce((n, c) => n + c._socket.bytesRead, 0);
const cpu0 = cpu();
const t0 = Date.now();
counting = true;
let sent = 0;
let payload = 0;
const timer = setInterval(() => {
  const frame = JSON.stringify({ event: 'message', data: { room: 'bench', text: line() } });
  payload += frame.length;
  clients[0].send(frame);
  sent++;
}, 1000 / rate);
await new Promise((r) => setTimeout(r, seconds * 1000));
clearInterval(timer);
await new Promise((r) => setTimeout(r, 1000));
counting = false;
const cpu1 = cpu();
const wall = (Date.now() - t0) / 1000;
const read = clients.reduce((n, c) => n + c._socket.bytesRead, 0) - read0;
console.log(JSON.stringify({
  compression: !plain, stream: long ? 'long' : 'mixed', agreed, conns, sent, delivered,
  bytes_read_per_delivery: +(read / delivered).toFixed(1),
  sent_event_bytes_avg: +(payload / sent).toFixed(1),
  server_cpu_per_delivery_us: +(((cpu1 - cpu0) / delivered) * 1e6).toFixed(3),
  wall_s: +wall.toFixed(2),
}));
clients.forEach((c) => c.terminate());
process.exit(0);
