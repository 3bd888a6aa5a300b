// Outgoing mail (nodemailer over SMTP): password-reset and email-verification links. Without
// SMTP_URL there is no mailer, and the features that need one are not offered (no "Forgot your
// password?" link, no verification mail). A message is never logged: it carries a live link.
import type { Transporter } from 'nodemailer';
import type { Config } from '../config/index.ts';
import type { Logger } from '../http/log.ts';

export interface Mail {
  to: string;
  subject: string;
  text: string;
}

export interface Mailer {
  send(mail: Mail): Promise<void>;
}

export function createMailer(config: Pick<Config, 'SMTP_URL' | 'MAIL_FROM' | 'ISSUER'>, log: Logger): Mailer | undefined {
  if (!config.SMTP_URL) return undefined;
  // nodemailer is loaded with the first message, not at start (a tenth of the code loaded otherwise).
  const smtpUrl = config.SMTP_URL;
  let transport: Promise<Transporter> | undefined;
  const from = config.MAIL_FROM ?? `Gatehouse <no-reply@${new URL(config.ISSUER).hostname}>`;
  return {
    async send(mail) {
      try {
        transport ??= import('nodemailer').then((m) => m.default.createTransport(smtpUrl));
        await (await transport).sendMail({ from, to: mail.to, subject: mail.subject, text: mail.text });
      } catch (err) {
        // The caller answers the same either way (no hint whether an account exists); the operator
        // sees the failure, without the message or its link.
        log.warn({ err: { name: (err as Error).name, code: (err as { code?: string }).code } }, 'sending mail failed');
      }
    },
  };
}
