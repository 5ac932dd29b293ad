# {{name}} {{version}}: flow-bridge and the plugin's handler in one image, made by
# `flow-bridge package`. Build it from the archive as it is (its root is the context):
#   docker build -t {{image}} - < {{archive}}

# The handler, built with the versions Cargo.lock pins (adapter/ is in the context).
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
{{build}}

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /app
{{install}}
{{requirements}}COPY . .
# Where ./run looks for it; without cargo in this image, ./build leaves it as it is.
{{built}}
CMD {{cmd}}
