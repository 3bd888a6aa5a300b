// Memory given back after load. Under load V8 grows its old generation (to about twice what stays
// live) and keeps it once the load stops: a server that answered a burst and then idles would hold
// that memory for good. One full collection once requests have stopped for a while gives it back
// (issue 16: RSS back near idle after load). It runs only when nothing was served for two whole
// periods, so no request waits on it; a request costs one counter increment.
import v8 from 'node:v8';
import vm from 'node:vm';

export function startIdleCollection(opts: { periodMs?: number } = {}): { served(): void; stop(): void } {
  // How Node exposes gc() without --expose-gc on the command line (Jest's leak detector does the same).
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  let requests = 0;
  let seen = 0;
  let quiet = 0;
  let collected = true;
  const timer = setInterval(() => {
    if (requests !== seen) {
      seen = requests;
      quiet = 0;
      collected = false;
      return;
    }
    if (!collected && ++quiet >= 2) {
      collected = true;
      gc();
    }
  }, opts.periodMs ?? 5000);
  timer.unref();
  return {
    served: () => void requests++,
    stop: () => clearInterval(timer),
  };
}
