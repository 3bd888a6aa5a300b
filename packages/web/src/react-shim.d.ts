// The one React function the hook uses, declared here so the package builds without React's types
// (React is an optional peer dependency). Not emitted: users' own React types apply.
declare module 'react' {
  export function useSyncExternalStore<T>(subscribe: (onChange: () => void) => () => void, getSnapshot: () => T, getServerSnapshot?: () => T): T;
}
