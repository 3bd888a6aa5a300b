// Passkeys (WebAuthn) on Gatehouse's pages, through @simplewebauthn/browser (served from this
// origin as /assets/simplewebauthn-browser.js). Each element with data-passkey starts a ceremony:
//   sign-in      a button: ask for a passkey (sign-in alone, or the second factor)
//   conditional  no button: offer passkeys in the email field's autofill (conditional UI)
//   register     a button: create a passkey for the signed-in account
// data-options and data-verify are the two JSON endpoints; data-csrf is the page's CSRF token.
// The pages work without this script; only passkeys need it.
(function () {
  'use strict';
  var W = window.SimpleWebAuthnBrowser;
  if (!W || !W.browserSupportsWebAuthn()) return;
  var errorBox = document.getElementById('passkey-error');

  function post(url, csrf, body) {
    body._csrf = csrf;
    return fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (json) {
        if (!res.ok) throw new Error(json.error_description || 'The passkey was not accepted. Try again.');
        return json;
      });
    });
  }

  function show(message) {
    if (!errorBox) return;
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function run(el, autofill) {
    var kind = el.getAttribute('data-passkey');
    var csrf = el.getAttribute('data-csrf');
    if (errorBox) errorBox.hidden = true;
    var password = kind === 'register' ? document.getElementById('passkey-password') : null;
    return post(el.getAttribute('data-options'), csrf, password ? { password: password.value } : {})
      .then(function (options) {
        return kind === 'register'
          ? W.startRegistration({ optionsJSON: options })
          : W.startAuthentication({ optionsJSON: options, useBrowserAutofill: autofill });
      })
      .then(function (response) {
        var body = { response: response };
        if (kind === 'register') {
          var name = document.getElementById('passkey-name');
          body.name = name ? name.value : '';
        }
        return post(el.getAttribute('data-verify'), csrf, body);
      })
      .then(function (result) { window.location.assign(result.location); })
      .catch(function (err) {
        // A conditional request is cancelled when the person presses the button instead.
        if (err && (err.name === 'AbortError' || err.code === 'ERROR_CEREMONY_ABORTED')) return;
        if (err && err.name === 'NotAllowedError') return show('No passkey was used. Try again, or sign in another way.');
        show(err && err.message ? err.message : 'The passkey was not accepted. Try again.');
      });
  }

  Array.prototype.forEach.call(document.querySelectorAll('[data-passkey]'), function (el) {
    if (el.getAttribute('data-passkey') === 'conditional') {
      W.browserSupportsWebAuthnAutofill().then(function (ok) { if (ok) run(el, true); });
      return;
    }
    el.hidden = false;
    el.addEventListener('click', function (event) {
      event.preventDefault();
      run(el, false);
    });
  });
})();
