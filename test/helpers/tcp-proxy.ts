// A TCP proxy the fault suite puts between Gatehouse and PostgreSQL or Redis, so it can cut the
// dependency (drop every connection and refuse new ones) or hang it (accept, never answer) while
// the shared services keep running for every other test.
import net from 'node:net';
import type { AddressInfo } from 'node:net';

export type ProxyMode = 'open' | 'refuse' | 'hang';

export interface TcpProxy {
  port: number;
  /** Replace host:port of a URL with the proxy's. */
  url(target: string): string;
  /** 'refuse': drop every connection and reset new ones. 'hang': stop forwarding on every connection, old and new, dropping none. */
  cut(mode?: Exclude<ProxyMode, 'open'>): void;
  /** Forward again. */
  restore(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(host: string, port: number): Promise<TcpProxy> {
  let mode: ProxyMode = 'open';
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
  };
  const pairs = new Set<[net.Socket, net.Socket]>();
  const forward = ([a, b]: [net.Socket, net.Socket]) => {
    a.pipe(b);
    b.pipe(a);
  };
  const server = net.createServer((client) => {
    track(client);
    if (mode === 'refuse') return void client.resetAndDestroy();
    const upstream = net.connect(port, host);
    track(upstream);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    if (mode === 'open') forward(pair);
    client.on('close', () => { upstream.destroy(); pairs.delete(pair); });
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const own = (server.address() as AddressInfo).port;
  const dropAll = () => {
    for (const s of sockets) s.resetAndDestroy();
  };
  return {
    port: own,
    url(target) {
      const u = new URL(target);
      u.hostname = '127.0.0.1';
      u.port = String(own);
      return u.href;
    },
    cut(m = 'refuse') {
      mode = m;
      if (m === 'refuse') return dropAll();
      for (const [a, b] of pairs) {
        a.unpipe(b);
        b.unpipe(a);
      }
    },
    restore() {
      const was = mode;
      mode = 'open';
      if (was === 'hang') for (const pair of pairs) forward(pair);
    },
    async close() {
      dropAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
