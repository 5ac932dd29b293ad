# {{name}} {{version}}: flow-bridge and the plugin's handler in one image, made by
# `flow-bridge package`. Build it from the archive as it is (its root is the context):
#   docker build -t {{image}} - < {{archive}}
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /app
{{install}}
{{requirements}}COPY . .
CMD {{cmd}}
