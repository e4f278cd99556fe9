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
USER node
ENTRYPOINT ["node", "src/cli/bin.js"]
CMD ["--help"]
