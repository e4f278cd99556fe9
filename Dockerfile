# One image for every fleetsim service (broker, firehose, bridge, devices); the command picks the part.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY tsconfig.json ./
COPY src ./src
COPY devices ./devices
COPY bridge ./bridge
# The bundle of the sources (src/runtime/bundle.mjs), built once here: the node user cannot write node_modules.
RUN node src/cli/bin.js --version
USER node
ENTRYPOINT ["node", "src/cli/bin.js"]
CMD ["--help"]
