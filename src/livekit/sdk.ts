// livekit-server-sdk, with the protobuf runtime under it (an eighth of the code Gatehouse would
// otherwise load at start), is loaded the first time a room token is minted, a webhook arrives or a
// participant is removed: a server without LiveKit, and every CLI command, never loads it (issue 16).
let sdk: Promise<typeof import('livekit-server-sdk')> | undefined;

export const livekitSdk = () => (sdk ??= import('livekit-server-sdk'));
