// A small React hook over GatehouseAuth: re-renders when the user signs in or out, or a token is
// refreshed. React is an optional peer dependency; import this from '@gatehouse/web/react'.
import { useSyncExternalStore } from 'react';
import type { AuthSnapshot, GatehouseAuth } from './auth.ts';

export interface UseGatehouse extends AuthSnapshot {
  signIn: GatehouseAuth['signIn'];
  signOut: GatehouseAuth['signOut'];
  getAccessToken: GatehouseAuth['getAccessToken'];
}

export function useGatehouse(auth: GatehouseAuth): UseGatehouse {
  const snapshot = useSyncExternalStore(auth.subscribe, auth.getSnapshot, auth.getSnapshot);
  return { ...snapshot, signIn: auth.signIn, signOut: auth.signOut, getAccessToken: auth.getAccessToken };
}
