// The password sign-in ceiling: an HTTP server that does nothing but one argon2id verification per
// request, with Gatehouse's own parameters and code (src/accounts/passwords.ts). Started by
// bench/run.ts as its own process, pinned like the Gatehouse server, so "password login ×ceiling"
// says how much of a sign-in's cost is anything other than the hash.
//
//   node --import tsx bench/argon2-ceiling.ts <port>
import http from 'node:http';
import { hashPassword, verifyPassword } from '../src/accounts/passwords.ts';

const port = Number(process.argv[2]);
const password = 'a long benchmark passphrase';
const hash = await hashPassword(password);

http.createServer((req, res) => {
  req.resume();
  req.on('end', async () => {
    const { ok } = await verifyPassword(hash, password);
    res.writeHead(ok ? 200 : 500, { 'content-type': 'text/plain' }).end(ok ? 'ok' : 'no');
  });
}).listen(port, '127.0.0.1', () => process.stdout.write('READY\n'));
