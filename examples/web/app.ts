// The example frontend: sign in with Gatehouse (code + PKCE, tokens in memory only), then ask for
// LiveKit connection details as the signed-in user. With livekit-client, the same token source
// connects a room: `room.connect(...)` via `TokenSource.custom(source)`.
import { createGatehouseAuth, livekitTokenSource } from '@gatehouse/web';

const config = JSON.parse(document.getElementById('config')!.textContent!) as { issuer: string; clientId: string; agentName?: string };
const origin = window.location.origin;
const auth = createGatehouseAuth({
  issuer: config.issuer,
  clientId: config.clientId,
  redirectUri: `${origin}/`,
  postLogoutRedirectUri: `${origin}/`,
  // A local Gatehouse runs on http://.
  allowInsecureRequests: new URL(config.issuer).protocol === 'http:',
});
const source = livekitTokenSource(auth, config.agentName ? { agentName: config.agentName } : {});

const $ = (id: string) => document.getElementById(id)!;
function render() {
  const s = auth.getSnapshot();
  $('status').textContent = s.isAuthenticated ? `Signed in as ${String(s.user?.name ?? s.user?.email ?? s.user?.sub)}` : 'Signed out';
  $('sign-in').hidden = s.isAuthenticated;
  for (const id of ['connect', 'refresh', 'sign-out']) $(id).hidden = !s.isAuthenticated;
  if (!s.isAuthenticated) $('details').hidden = true;
  $('error').textContent = s.error ?? '';
}
auth.subscribe(render);

$('sign-in').addEventListener('click', () => void auth.signIn());
$('sign-out').addEventListener('click', () => void auth.signOut());
$('refresh').addEventListener('click', () => void auth.refresh().then(() => ($('error').textContent = 'Token refreshed'), (e: Error) => ($('error').textContent = e.message)));
$('connect').addEventListener('click', async () => {
  try {
    const d = await source();
    $('room').textContent = d.roomName;
    $('participant').textContent = d.participantName;
    $('server').textContent = d.serverUrl;
    $('details').hidden = false;
  } catch (e) {
    $('error').textContent = (e as Error).message;
  }
});

await auth.handleRedirectCallback();
render();
