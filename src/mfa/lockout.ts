// Lockout housekeeping (issue 7): a password reset ends an account's lockout, so an attacker who
// keeps guessing can delay its owner but never lock them out for good.
import type { Accounts } from '../accounts/users.ts';
import type { RateLimits } from '../http/rate-limit.ts';
import { accountLockKey } from './interaction.ts';

/** accounts with setPassword (and resetMfa) also clearing the account's login and MFA lockouts. */
export function withLockoutReset(accounts: Accounts, limits: RateLimits): Accounts {
  return {
    ...accounts,
    async setPassword(id, password) {
      await accounts.setPassword(id, password);
      const user = await accounts.findUserById(id);
      if (user) await limits.clear('loginAccount', accountLockKey(user.email));
    },
    async resetMfa(id) {
      const result = await accounts.resetMfa(id);
      await limits.clear('mfaAccount', id);
      return result;
    },
  };
}
