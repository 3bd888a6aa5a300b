// Lockouts (issues 7 and 20): one account's password guesses share one counter, whatever page they
// come through (sign-in, password change, account deletion), and its second-factor guesses another.
// Guesses are counted before they are checked (src/http/rate-limit.ts `attempt`). A password reset
// ends an account's lockout, so an attacker who keeps guessing can delay its owner but never lock
// them out for good.
import type { Accounts, AuthenticateResult } from '../accounts/users.ts';
import { emailKey } from '../accounts/email.ts';
import { hashKey, type AttemptOptions, type RateLimits } from '../http/rate-limit.ts';

/**
 * The lockout key of an email, known or not (the counters cannot tell an attacker which): every
 * spelling of one address (src/accounts/email.ts) shares one counter, hashed (keys are personal data).
 */
export const accountLockKey = (email: string) => hashKey(emailKey(email));

/**
 * One password guess for `email`: counted against the account's lockout before argon2 runs, and
 * given back when the password is right (a wrong one stays counted). Throws RateLimited (429) while
 * the account is locked and LimitsUnavailable (503) when the lockout's store cannot be reached.
 */
export async function checkPassword(
  deps: { accounts: Pick<Accounts, 'authenticate'>; limits: RateLimits },
  email: string,
  password: string,
  options: AttemptOptions = {},
): Promise<{ result: AuthenticateResult; guesses: number }> {
  const guess = await deps.limits.attempt('loginAccount', accountLockKey(email), options);
  const result = await deps.accounts.authenticate(email, password);
  // `inactive` comes only after the right password: not a guess that failed.
  if (!('error' in result) || result.error !== 'invalid_credentials') await guess.passed();
  return { result, guesses: guess.count };
}

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
