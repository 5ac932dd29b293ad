# {{name}} {{version}}: flow-bridge and the plugin's handler in one image, made by
# `flow-bridge package`. Build it from the archive as it is (its root is the context):
#   docker build -t {{image}} - < {{archive}}

# The handler's jar and its class path; adapter/ is in the context and installed first.
FROM maven:3-eclipse-temurin-17 AS build
WORKDIR /src
COPY . .
{{build}}

# A Java runtime for the handler; the JRE of the official image runs on this Debian base as it is.
FROM eclipse-temurin:17-jre AS jre

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    JAVA_HOME=/opt/java/openjdk PATH=/opt/java/openjdk/bin:$PATH
WORKDIR /app
COPY --from=jre /opt/java/openjdk /opt/java/openjdk
{{install}}
{{requirements}}COPY . .
# Where ./run looks for them; without Maven in this image, ./build leaves them as they are.
{{built}}
CMD {{cmd}}
