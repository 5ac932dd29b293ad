# {{name}} {{version}}: flow-bridge and the plugin's handler in one image, made by
# `flow-bridge package`. Build it from the archive as it is (its root is the context):
#   docker build -t {{image}} - < {{archive}}

# Node.js for the handler, and its npm dependencies if package.json lists any.
FROM node:20-bookworm-slim AS node
WORKDIR /src
{{build}}

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /app
# The node binary of the official image runs on this Debian base as it is.
COPY --from=node /usr/local/bin/node /usr/local/bin/node
{{install}}
{{requirements}}COPY . .
{{built}}
CMD {{cmd}}
