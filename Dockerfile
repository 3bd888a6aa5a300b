FROM node:22-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000
COPY package.json package-lock.json ./
# The client packages (packages/*) are npm workspaces named in the lock; the server does not load them.
COPY packages ./packages
# npm ci runs the `prepare` script, which compiles src/ to dist/ (scripts/build.mjs, esbuild).
COPY scripts/build.mjs ./scripts/build.mjs
COPY src ./src
RUN npm ci --omit=dev --no-audit --no-fund
COPY migrations ./migrations
COPY views ./views
COPY public ./public
COPY bin ./bin
USER node
EXPOSE 3000
HEALTHCHECK CMD node -e "fetch('http://127.0.0.1:3000/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "bin/gatehouse.js", "serve"]
