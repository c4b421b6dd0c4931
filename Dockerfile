# The callrec service: ARI application, archive writer, web console.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      espeak-ng libsndfile1 tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/callrec --create-home callrec
WORKDIR /opt/callrec
COPY pyproject.toml README.md ./
COPY callrec ./callrec
COPY prompts ./prompts
COPY config ./config
COPY deploy/start-callrec.sh ./
RUN pip install --no-cache-dir .
USER callrec
EXPOSE 8080
# Example secrets refused, the editable routing and prompts seeded into the volume, schema
# and prompt audio (both idempotent), then the service.
CMD ["/opt/callrec/start-callrec.sh"]
