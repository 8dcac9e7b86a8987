# perpchain node image. Build: docker build -t perpchain .
# First run:  docker run --rm -v perpchain-data:/data perpchain \
#                 init --genesis /opt/perpchain/genesis/devnet.json --home /data
# Then:       docker run -d -v perpchain-data:/data -p 127.0.0.1:9545:9545 \
#                 -p 127.0.0.1:9560:9560 perpchain
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the package (plyvel, pynacl and msgpack ship manylinux wheels: no compiler).
WORKDIR /opt/perpchain/src
COPY pyproject.toml README.md ./
COPY node ./node
RUN pip install . && cd / && rm -rf /opt/perpchain/src
COPY genesis /opt/perpchain/genesis

# Unprivileged user owning the node home; the admin token it creates there is mode 0600.
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home perpchain \
    && mkdir -p /data && chown perpchain:perpchain /data
WORKDIR /data
VOLUME ["/data"]
USER perpchain

# Inside the container the listeners must bind every interface to be reachable through -p;
# publish them on the host's loopback unless they are meant to be public. The admin listener
# stays off unless PERPCHAIN_ADMIN_ENABLED=true, and then requires /data/admin.token.
ENV PERPCHAIN_RPC_LISTEN=0.0.0.0:9545 \
    PERPCHAIN_ADMIN_LISTEN=0.0.0.0:9546 \
    PERPCHAIN_METRICS_LISTEN=0.0.0.0:9560
EXPOSE 9545 9546 9560

# /health answers 503 while the node is halted or not ready; urlopen raises on any non-2xx.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9545/health', timeout=4)"]

ENTRYPOINT ["perpchain"]
CMD ["start", "--home", "/data"]
