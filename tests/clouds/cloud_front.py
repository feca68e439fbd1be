#!/usr/bin/env python3
"""cloud_front: the three clouds' identity services, and a checking front
for the mock provider, for the integration tests.

It plays AWS STS and the EKS Pod Identity agent, Google's OAuth token
endpoint and the GKE metadata server, and Microsoft Entra's token endpoint,
and stands in front of the mock provider (``upstream``): every request to
``/azure/``, ``/vertex/`` or ``/bedrock/`` has its credentials checked (SigV4
recomputed with botocore, JWTs verified with google-auth) before it is
forwarded, prefix stripped, with the answer streamed back as it arrives.
Python 3.11, the standard library, and botocore, google-auth, PyJWT and
cryptography (``make deps`` installs them).

Run::

    python3 tests/clouds/cloud_front.py --config FILE
    python3 tests/clouds/cloud_front.py --make-google-key OUT.json --token-uri URL

FILE is JSON; every cloud section is optional (a missing one makes its
endpoints answer 404)::

    {"listen": "127.0.0.1:0",            # host:port, port 0 picks a free one
     "port_file": "/tmp/x/port",         # the bound port is written here (atomically)
     "upstream": "http://127.0.0.1:18080",
     "token_ttl": 3,                     # seconds every issued credential lives
     "aws": {"region": "us-east-1",
             "static": [["AKIDSTATIC", "secretstatic"]],
             "role_arn": "arn:aws:iam::111122223333:role/llm",
             "web_identity_token": "eyJ...irsa",
             "pod_identity_token": "pod-identity-token"},
     "google": {"service_account_key_file": "/tmp/x/sa.json", "metadata": true},
     "azure": {"api_key": "azkey", "tenant": "tenant-1", "client_id": "client-1",
               "federated_token": "eyJ...azure"}}

The key file is read when a JWT arrives (not at start), so a test can start
the front, learn its port, then write the key with
``--make-google-key sa.json --token-uri http://127.0.0.1:PORT/google/token``.

Identity endpoints (each refuses what the real one would, in its shape):

- ``POST /aws/sts/`` form ``Action=AssumeRoleWithWebIdentity&Version=2011-06-15
  &RoleArn&RoleSessionName&WebIdentityToken[&DurationSeconds]`` -> STS XML
  with fresh AccessKeyId/SecretAccessKey/SessionToken/Expiration.
- ``GET /aws/pod-identity`` with ``Authorization: <pod_identity_token>`` ->
  ``{"AccessKeyId","SecretAccessKey","Token","Expiration"}`` (401 / 403).
- ``POST /google/token`` form ``grant_type=urn:ietf:params:oauth:grant-type:
  jwt-bearer&assertion=JWT`` (RS256 by the key file's key, iss, aud (the key
  file's token_uri, or https://oauth2.googleapis.com/token, which google-auth
  always uses), scope cloud-platform, iat, exp, kid checked) -> ``{"access_token","expires_in",
  "token_type"}``.
- ``GET /computeMetadata/v1/instance/service-accounts/default/token`` with
  ``Metadata-Flavor: Google`` (when google.metadata is true; also
  ``.../default/?recursive=true``, ``.../default/email``, ``/`` for the SDKs'
  probes, and ``/computeMetadata/v1/project/project-id`` -> test-project).
- ``POST /azure/{tenant}/oauth2/v2.0/token`` form client_id,
  client_assertion_type, client_assertion, grant_type=client_credentials,
  scope=https://cognitiveservices.azure.com/.default -> Entra JSON.

Front (checked, then forwarded as ``/<rest>``, query kept):

- ``/azure/<rest>``: ``api-key`` or ``Authorization: Bearer <Entra token>``.
- ``/vertex/<rest>``: ``Authorization: Bearer <Google token>``.
- ``/bedrock/<rest>``: SigV4 (service bedrock, the configured region, a static
  key or an issued one with its ``X-Amz-Security-Token``, X-Amz-Date within
  5 minutes, x-amz-content-sha256 matching the body when signed), recomputed
  with botocore's SigV4Auth over the path as received (prefix included).

Control (no auth): ``GET /_front/stats``; ``POST /_front/down?endpoint=
sts|pod_identity|google_jwt|gke_metadata|entra|all`` (503 until ``/_front/up``
with the same query); ``POST /_front/ttl?seconds=N`` (for tokens issued after).

One line per request goes to stderr (no secret in full). It exits on SIGTERM,
SIGINT, or when its parent process dies.

From a test: write the config with ``"listen": "127.0.0.1:0"`` and a
``port_file`` in the test's temporary directory, spawn ``python3
tests/clouds/cloud_front.py --config FILE`` (stderr to a log file or
inherited), poll until port_file exists (it is renamed into place once the
socket listens, so its content is always whole; give up after ~20 s or when
the child has exited, and show its stderr), read the port, and SIGTERM /
kill the child when done (a child left behind stops itself within half a
second of its parent's exit). Point the sidecar's endpoints at
``http://127.0.0.1:PORT/{aws/sts/,aws/pod-identity,google/token,azure,
vertex,bedrock}`` and ``GCE_METADATA_HOST=127.0.0.1:PORT``.
"""

import argparse
import base64
import calendar
import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import signal
import string
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PARENT_PID = os.getppid()  # before anything slow, so a quick parent exit is seen

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "proxy-connection",
}
ENDPOINTS = ("sts", "pod_identity", "google_jwt", "gke_metadata", "entra")
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
# google-auth (Python) signs for this audience whatever the key's token_uri,
# and Google takes it; so both it and token_uri are accepted as aud.
GOOGLE_TOKEN_AUD = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_JWT = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
SA_EMAIL = "llmesh-test@test-project.iam.gserviceaccount.com"
PROJECT_ID = "test-project"


def log(msg):
    try:
        sys.stderr.write(f"cloud_front: {msg}\n")
        sys.stderr.flush()
    except Exception:
        pass


def redact(value):
    """A secret shown in a log line: its length and a few characters."""
    if not value:
        return "<none>"
    return f"{value[:4]}…({len(value)})"


def iso8601(ts):
    return datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def rand_upper(n):
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def xml_escape(s):
    return (
        s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


class Refusal(Exception):
    """A refusal: status, headers, body, and the reason recorded in stats."""

    def __init__(self, status, body, reason, headers=None, content_type="application/json"):
        super().__init__(reason)
        self.status = status
        self.body = body if isinstance(body, bytes) else body.encode()
        self.reason = reason
        self.headers = headers or {}
        self.content_type = content_type


def json_refusal(status, obj, reason, headers=None):
    return Refusal(status, json.dumps(obj), reason, headers)


class State:
    def __init__(self, cfg):
        self.cfg = cfg
        self.lock = threading.Lock()
        self.ttl = float(cfg.get("token_ttl", 3600))
        self.aws = cfg.get("aws")
        self.google = cfg.get("google")
        self.azure = cfg.get("azure")
        # access key id -> (secret, session token or None, expiry or None)
        self.aws_keys = {}
        for akid, secret in (self.aws or {}).get("static", []):
            self.aws_keys[akid] = (secret, None, None)
        self.google_tokens = {}  # token -> expiry
        self.azure_tokens = {}  # token -> expiry
        self.issued = {e: 0 for e in ENDPOINTS}
        self.accepted = {"azure": 0, "vertex": 0, "bedrock": 0}
        self.rejected = []
        self.down = set()
        self._key_cache = None  # (path, mtime, parsed)

    def count_issued(self, endpoint):
        with self.lock:
            self.issued[endpoint] += 1

    def count_accepted(self, front):
        with self.lock:
            self.accepted[front] += 1

    def reject(self, path, reason):
        with self.lock:
            self.rejected.append({"path": path, "reason": reason})

    def is_down(self, endpoint):
        with self.lock:
            return endpoint in self.down

    def expiry(self):
        with self.lock:
            return time.time() + self.ttl, self.ttl

    def google_key(self):
        """The service-account key file, parsed, with its public key PEM."""
        from cryptography.hazmat.primitives import serialization

        path = self.google["service_account_key_file"]
        mtime = os.stat(path).st_mtime_ns
        cached = self._key_cache
        if cached and cached[0] == path and cached[1] == mtime:
            return cached[2]
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        private = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        info = dict(info, public_pem=public_pem)
        self._key_cache = (path, mtime, info)
        return info


# ---------------------------------------------------------------- SigV4


def _make_verifier_class():
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import HTTPHeaders

    class SignedHeadersSigV4(SigV4Auth):
        """botocore's SigV4Auth, over exactly the headers the client signed
        (its default set leaves some out, e.g. user-agent, which a client may
        still sign)."""

        def __init__(self, credentials, service, region, signed, headers):
            super().__init__(credentials, service, region)
            self._signed = signed
            self._raw = headers

        def headers_to_sign(self, request):
            out = HTTPHeaders()
            for name in self._signed:
                for value in self._raw.get_all(name) or []:
                    out[name] = value
            return out

    return SignedHeadersSigV4


_VERIFIER = None


def aws_error(status, kind, message, reason):
    return json_refusal(status, {"message": message}, reason, {"x-amzn-ErrorType": kind})


def verify_sigv4(state, method, raw_path, headers, body):
    """Checks a Bedrock request's SigV4; raises Refusal."""
    global _VERIFIER
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    if _VERIFIER is None:
        _VERIFIER = _make_verifier_class()
    aws = state.aws
    auth = headers.get("Authorization")
    if not auth:
        raise aws_error(403, "MissingAuthenticationTokenException",
                        "Missing Authentication Token", "no Authorization header")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        raise aws_error(403, "IncompleteSignatureException",
                        "Authorization header requires the AWS4-HMAC-SHA256 algorithm.",
                        "not AWS4-HMAC-SHA256")
    parts = {}
    for piece in auth[len("AWS4-HMAC-SHA256 "):].split(","):
        k, _, v = piece.strip().partition("=")
        parts[k] = v
    if not all(parts.get(k) for k in ("Credential", "SignedHeaders", "Signature")):
        raise aws_error(403, "IncompleteSignatureException",
                        "Authorization header requires 'Credential', 'SignedHeaders' and "
                        "'Signature' parameters.", "incomplete Authorization")
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise aws_error(403, "IncompleteSignatureException",
                        "Credential should have the form "
                        "<key>/<date>/<region>/<service>/aws4_request.", "malformed Credential")
    akid, scope_date, region, service, _ = scope
    if region != aws["region"]:
        raise aws_error(403, "InvalidSignatureException",
                        "Credential should be scoped to a valid region.",
                        f"wrong region {region}")
    if service != "bedrock":
        raise aws_error(403, "InvalidSignatureException",
                        "Credential should be scoped to correct service: 'bedrock'.",
                        f"wrong service {service}")
    with state.lock:
        key = state.aws_keys.get(akid)
    if key is None:
        raise aws_error(403, "UnrecognizedClientException",
                        "The security token included in the request is invalid.",
                        f"unknown access key {redact(akid)}")
    secret, session_token, expiry = key
    given_token = headers.get("X-Amz-Security-Token")
    if session_token is None:
        if given_token is not None:
            raise aws_error(403, "UnrecognizedClientException",
                            "The security token included in the request is invalid.",
                            "security token with a static key")
    else:
        if given_token is None:
            raise aws_error(403, "UnrecognizedClientException",
                            "The security token included in the request is invalid.",
                            "missing X-Amz-Security-Token")
        if not hmac.compare_digest(given_token.encode(), session_token.encode()):
            raise aws_error(403, "UnrecognizedClientException",
                            "The security token included in the request is invalid.",
                            "wrong X-Amz-Security-Token")
        if time.time() >= expiry:
            raise aws_error(403, "ExpiredTokenException",
                            "The security token included in the request is expired",
                            "expired session credentials")
    amz_date = headers.get("X-Amz-Date")
    if not amz_date:
        raise aws_error(403, "IncompleteSignatureException",
                        "Authorization header requires existence of either a 'X-Amz-Date' or "
                        "a 'Date' header.", "no X-Amz-Date")
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, SIGV4_TIMESTAMP))
    except ValueError:
        raise aws_error(403, "IncompleteSignatureException",
                        f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'.",
                        "malformed X-Amz-Date") from None
    now = time.time()
    if signed_at < now - 300:
        raise aws_error(403, "InvalidSignatureException",
                        f"Signature expired: {amz_date} is now earlier than "
                        f"{time.strftime(SIGV4_TIMESTAMP, time.gmtime(now - 300))} "
                        f"({time.strftime(SIGV4_TIMESTAMP, time.gmtime(now))} - 5 min.)",
                        "signature expired")
    if signed_at > now + 300:
        raise aws_error(403, "InvalidSignatureException",
                        f"Signature not yet current: {amz_date} is still later than "
                        f"{time.strftime(SIGV4_TIMESTAMP, time.gmtime(now + 300))} "
                        f"({time.strftime(SIGV4_TIMESTAMP, time.gmtime(now))} + 5 min.)",
                        "signature not yet current (Signature expired)")
    if scope_date != amz_date[:8]:
        raise aws_error(403, "InvalidSignatureException",
                        f"Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                        f"version of date from HTTP: '{scope_date}' != '{amz_date[:8]}', "
                        f"from '{amz_date}'.", "credential date mismatch")
    signed = parts["SignedHeaders"].split(";")
    if signed != sorted(set(signed)) or any(s != s.lower() for s in signed):
        raise aws_error(403, "InvalidSignatureException",
                        "SignedHeaders must be lowercase, sorted and unique.",
                        "malformed SignedHeaders")
    if "host" not in signed:
        raise aws_error(403, "InvalidSignatureException",
                        "'Host' must be a 'SignedHeader' in the AWS Authorization.",
                        "host not signed")
    for name in signed:
        if headers.get(name) is None:
            raise aws_error(403, "InvalidSignatureException",
                            f"The request signature we calculated does not match the signature "
                            f"you provided. Signed header '{name}' is missing.",
                            f"signed header {name} missing")
    if "x-amz-content-sha256" in signed:
        if headers.get("x-amz-content-sha256") != hashlib.sha256(body).hexdigest():
            raise aws_error(403, "InvalidSignatureException",
                            "The request signature we calculated does not match the signature "
                            "you provided. x-amz-content-sha256 does not match the body.",
                            "x-amz-content-sha256 mismatch")
    request = AWSRequest(method=method, url=f"http://{headers.get('Host')}{raw_path}",
                         data=body)
    for name in signed:
        for value in headers.get_all(name):
            request.headers[name] = value
    request.context["timestamp"] = amz_date
    signer = _VERIFIER(Credentials(akid, secret, session_token), "bedrock", region,
                       signed, headers)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected.encode(), parts["Signature"].encode()):
        raise aws_error(403, "InvalidSignatureException",
                        "The request signature we calculated does not match the signature you "
                        "provided. Check your AWS Secret Access Key and signing method. Consult "
                        "the service documentation for details.", "signature mismatch")


# ---------------------------------------------------------------- identity


def sts_error(status, code, message, reason, fault="Sender"):
    body = (
        f'<ErrorResponse xmlns="{STS_NS}">\n  <Error>\n    <Type>{fault}</Type>\n'
        f"    <Code>{code}</Code>\n    <Message>{xml_escape(message)}</Message>\n"
        f"  </Error>\n  <RequestId>{uuid.uuid4()}</RequestId>\n</ErrorResponse>\n"
    )
    return Refusal(status, body, reason, content_type="text/xml")


def is_form(headers):
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return ctype == "application/x-www-form-urlencoded"


def form_params(body):
    try:
        return urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True,
                                     strict_parsing=False)
    except UnicodeDecodeError:
        return {}


def single(params, name):
    values = params.get(name)
    return values[0] if values and len(values) == 1 else None


def issue_aws(state):
    expiry, _ = state.expiry()
    akid = "ASIA" + rand_upper(16)
    secret = base64.b64encode(secrets.token_bytes(30)).decode()
    token = "IQoJb3JpZ2luX2VjE" + base64.b64encode(secrets.token_bytes(96)).decode()
    with state.lock:
        state.aws_keys[akid] = (secret, token, expiry)
    return akid, secret, token, expiry


def handle_sts(state, method, headers, body):
    if method != "POST":
        raise sts_error(400, "InvalidAction", "Only POST is supported here.", "sts not POST")
    if not is_form(headers):
        raise sts_error(400, "InvalidParameterValue",
                        "The request body must be application/x-www-form-urlencoded.",
                        "sts body not a form")
    p = form_params(body)
    action = single(p, "Action")
    if action != "AssumeRoleWithWebIdentity":
        raise sts_error(400, "InvalidAction",
                        f"Could not find operation {action} for version "
                        f"{single(p, 'Version')}", f"sts action {action}")
    if single(p, "Version") != "2011-06-15":
        raise sts_error(400, "InvalidAction",
                        f"Could not find operation {action} for version {single(p, 'Version')}",
                        "sts version")
    for name in ("RoleArn", "RoleSessionName", "WebIdentityToken"):
        if not single(p, name):
            raise sts_error(400, "MissingParameter",
                            f"The request must contain the parameter {name}", f"sts no {name}")
    session = single(p, "RoleSessionName")
    if not re.fullmatch(r"[\w+=,.@-]{2,64}", session):
        raise sts_error(400, "ValidationError",
                        f"1 validation error detected: Value '{session}' at 'roleSessionName' "
                        "failed to satisfy constraint: Member must satisfy regular expression "
                        "pattern: [\\w+=,.@-]*", "sts bad RoleSessionName")
    duration = p.get("DurationSeconds")
    if duration is not None:
        d = duration[0] if len(duration) == 1 else ""
        if not d.isdigit() or not 900 <= int(d) <= 43200:
            raise sts_error(400, "ValidationError",
                            f"1 validation error detected: Value '{d}' at 'durationSeconds' "
                            "failed to satisfy constraint: Member must have value greater than "
                            "or equal to 900", "sts bad DurationSeconds")
    extra = set(p) - {"Action", "Version", "RoleArn", "RoleSessionName", "WebIdentityToken",
                      "DurationSeconds", "Policy", "ProviderId"}
    if extra:
        raise sts_error(400, "InvalidParameter", f"Unknown parameters {sorted(extra)}",
                        "sts unknown parameters")
    if not hmac.compare_digest(single(p, "WebIdentityToken").encode(),
                               state.aws["web_identity_token"].encode()):
        raise sts_error(400, "InvalidIdentityToken",
                        "The web identity token that was passed could not be validated by "
                        "AWS. Get a new identity token from the identity provider and then "
                        "retry the request.", "wrong web identity token")
    role = single(p, "RoleArn")
    if role != state.aws["role_arn"]:
        raise sts_error(403, "AccessDenied",
                        "Not authorized to perform sts:AssumeRoleWithWebIdentity",
                        "wrong role")
    akid, secret, token, expiry = issue_aws(state)
    state.count_issued("sts")
    role_name = role.rsplit("/", 1)[-1]
    account = role.split(":")[4] if role.count(":") >= 5 else "111122223333"
    role_id = "AROA" + rand_upper(17)
    xml = f"""<AssumeRoleWithWebIdentityResponse xmlns="{STS_NS}">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:default:llmesh</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::{account}:assumed-role/{xml_escape(role_name)}/{xml_escape(session)}</Arn>
      <AssumedRoleId>{role_id}:{xml_escape(session)}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{iso8601(expiry)}</Expiration>
      <AccessKeyId>{akid}</AccessKeyId>
    </Credentials>
    <Provider>oidc.eks.us-east-1.amazonaws.com/id/TEST</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>{uuid.uuid4()}</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
"""
    return 200, "text/xml", xml.encode(), f"issued {redact(akid)}"


def handle_pod_identity(state, method, headers):
    if method != "GET":
        raise json_refusal(405, {"message": "method not allowed"}, "pod identity not GET")
    given = headers.get("Authorization")
    if not given:
        raise json_refusal(401, {"code": "AccessDeniedException",
                                 "message": "Authorization header is missing"},
                           "pod identity without Authorization")
    if not hmac.compare_digest(given.encode(), state.aws["pod_identity_token"].encode()):
        raise json_refusal(403, {"code": "AccessDeniedException",
                                 "message": "The service account token is invalid"},
                           "wrong pod identity token")
    akid, secret, token, expiry = issue_aws(state)
    state.count_issued("pod_identity")
    role = state.aws.get("role_arn", "arn:aws:iam::111122223333:role/llm")
    body = {"AccessKeyId": akid, "SecretAccessKey": secret, "Token": token,
            "AccountId": role.split(":")[4] if role.count(":") >= 5 else "111122223333",
            "Expiration": iso8601(expiry)}
    return 200, "application/json", json.dumps(body).encode(), f"issued {redact(akid)}"


def google_error(reason, description, code="invalid_grant"):
    return json_refusal(400, {"error": code, "error_description": description}, reason)


def handle_google_token(state, method, headers, body):
    import google.auth.jwt as gjwt

    if method != "POST":
        raise google_error("google token not POST", "Only POST is supported.", "invalid_request")
    if not is_form(headers):
        raise google_error("google token body not a form",
                           "Request must be application/x-www-form-urlencoded.",
                           "invalid_request")
    p = form_params(body)
    grant = single(p, "grant_type")
    if grant != JWT_BEARER:
        raise google_error(f"grant_type {grant}", f"Invalid grant_type: {grant}",
                           "unsupported_grant_type")
    assertion = single(p, "assertion")
    if not assertion:
        raise google_error("no assertion", "Missing required parameter: assertion",
                           "invalid_request")
    try:
        key = state.google_key()
    except (OSError, ValueError, KeyError) as e:
        raise google_error(f"key file unreadable: {e}", "Invalid JWT Signature.") from None
    try:
        header = json.loads(base64.urlsafe_b64decode(assertion.split(".")[0] + "=="))
    except Exception:
        raise google_error("malformed JWT", "Invalid JWT: could not parse") from None
    if header.get("alg") != "RS256":
        raise google_error(f"JWT alg {header.get('alg')}", "Invalid JWT Signature.")
    if header.get("kid") != key["private_key_id"]:
        raise google_error("JWT kid is not the key's private_key_id", "Invalid JWT Signature.")
    try:
        claims = gjwt.decode(assertion, certs={key["private_key_id"]: key["public_pem"]},
                             verify=True, audience=[key["token_uri"], GOOGLE_TOKEN_AUD],
                             clock_skew_in_seconds=10)
    except Exception as e:  # google-auth raises ValueError and its own subclasses
        text = str(e)
        if "signature" in text.lower() or "Could not verify" in text:
            raise google_error(f"bad JWT signature ({text})", "Invalid JWT Signature.") from None
        raise google_error(f"JWT rejected ({text})",
                           f"Invalid JWT: {text}") from None
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if claims.get("iss") != key["client_email"]:
        raise google_error("JWT iss is not the client_email", "Invalid JWT: wrong issuer.")
    if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)) \
            or abs(now - iat) > 300 or exp - iat > 3600 or exp <= iat:
        raise google_error("JWT iat/exp out of range",
                           "Invalid JWT: Token must be a short-lived token (60 minutes) and in "
                           "a reasonable timeframe. Check your iat and exp values in the JWT "
                           "claim.")
    scopes = str(claims.get("scope", "")).split()
    if CLOUD_PLATFORM not in scopes:
        raise google_error("JWT scope lacks cloud-platform",
                           "Invalid OAuth scope or ID token audience provided.", "invalid_scope")
    return issue_google(state, "google_jwt")


def issue_google(state, endpoint):
    expiry, ttl = state.expiry()
    token = "ya29." + secrets.token_urlsafe(48)
    with state.lock:
        state.google_tokens[token] = expiry
    state.count_issued(endpoint)
    body = {"access_token": token, "expires_in": int(ttl), "token_type": "Bearer"}
    return 200, "application/json", json.dumps(body).encode(), f"issued {redact(token)}"


def handle_metadata(state, method, path, query, headers):
    flavor = headers.get("Metadata-Flavor")
    if flavor != "Google":
        raise Refusal(403, "Missing required header: Metadata-Flavor: Google\n",
                      "metadata without Metadata-Flavor", content_type="text/plain")
    if method != "GET":
        raise Refusal(405, "Method not allowed\n", "metadata not GET", content_type="text/plain")
    base = "/computeMetadata/v1/instance/service-accounts/default"
    if path in ("/", "/computeMetadata/v1/", "/computeMetadata/v1"):
        return 200, "application/text", b"computeMetadata/\n", "probe"
    if path == "/computeMetadata/v1/project/project-id":
        return 200, "application/text", PROJECT_ID.encode(), "project-id"
    if path == base + "/email":
        return 200, "application/text", SA_EMAIL.encode(), "email"
    if path == base + "/" or path == base:
        info = {"aliases": ["default"], "email": SA_EMAIL, "scopes": [CLOUD_PLATFORM]}
        return 200, "application/json", json.dumps(info).encode(), "service account"
    if path == base + "/token":
        if state.is_down("gke_metadata"):
            raise Refusal(503, "Service Unavailable\n", "gke_metadata down",
                          content_type="text/plain")
        return issue_google(state, "gke_metadata")
    raise Refusal(404, "Not Found\n", "unknown metadata path", content_type="text/plain")


def entra_error(status, code, aadsts, message, reason):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    trace = str(uuid.uuid4())
    return json_refusal(status, {
        "error": code,
        "error_description": f"AADSTS{aadsts}: {message} Trace ID: {trace} "
                             f"Correlation ID: {uuid.uuid4()} Timestamp: {now}",
        "error_codes": [aadsts], "timestamp": now, "trace_id": trace,
        "correlation_id": str(uuid.uuid4()),
    }, reason)


def handle_entra(state, method, tenant, headers, body):
    az = state.azure
    if method != "POST":
        raise entra_error(400, "invalid_request", 900561,
                          "The endpoint only accepts POST requests.", "entra not POST")
    if not is_form(headers):
        raise entra_error(400, "invalid_request", 900561,
                          "The request body must be application/x-www-form-urlencoded.",
                          "entra body not a form")
    if tenant != az["tenant"]:
        raise entra_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.",
                          "wrong tenant")
    p = form_params(body)
    grant = single(p, "grant_type")
    if grant != "client_credentials":
        raise entra_error(400, "unsupported_grant_type", 70003,
                          "The app requested an unsupported grant type.",
                          f"grant_type {grant}")
    client_id = single(p, "client_id")
    if not client_id:
        raise entra_error(400, "invalid_request", 900144,
                          "The request body must contain the following parameter: 'client_id'.",
                          "no client_id")
    if client_id != az["client_id"]:
        raise entra_error(400, "unauthorized_client", 700016,
                          f"Application with identifier '{client_id}' was not found in the "
                          f"directory '{tenant}'.", "wrong client_id")
    if single(p, "client_assertion_type") != CLIENT_ASSERTION_JWT:
        raise entra_error(400, "invalid_request", 50027,
                          "Invalid client_assertion_type.", "wrong client_assertion_type")
    assertion = single(p, "client_assertion")
    if not assertion:
        raise entra_error(400, "invalid_request", 900144,
                          "The request body must contain the following parameter: "
                          "'client_assertion'.", "no client_assertion")
    if not hmac.compare_digest(assertion.encode(), az["federated_token"].encode()):
        raise entra_error(401, "invalid_client", 700211,
                          "No matching federated identity record found for presented "
                          "assertion.", "wrong client_assertion")
    scope = single(p, "scope")
    if scope is None or scope.split() != [COGNITIVE_SCOPE]:
        raise entra_error(400, "invalid_scope", 1002012,
                          f"The provided value for scope {scope} is not valid. Client "
                          "credential flows must have a scope value with /.default suffixed "
                          "to the resource identifier (application ID URI).", "wrong scope")
    if "client_secret" in p:
        raise entra_error(400, "invalid_request", 50027,
                          "Both client_secret and client_assertion were given.",
                          "client_secret with client_assertion")
    expiry, ttl = state.expiry()
    token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(48)
    with state.lock:
        state.azure_tokens[token] = expiry
    state.count_issued("entra")
    out = {"token_type": "Bearer", "expires_in": int(ttl), "ext_expires_in": int(ttl),
           "access_token": token}
    return 200, "application/json", json.dumps(out).encode(), f"issued {redact(token)}"


def bearer(headers):
    auth = headers.get("Authorization") or ""
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def token_live(state, table, token):
    if token is None:
        return "no bearer token"
    with state.lock:
        expiry = table.get(token)
    if expiry is None:
        return "unknown bearer token"
    if time.time() >= expiry:
        return "expired bearer token"
    return None


def check_azure(state, headers):
    az = state.azure
    key = headers.get("api-key")
    if key is not None:
        if hmac.compare_digest(key.encode(), az["api_key"].encode()):
            return "api-key"
        problem = "wrong api-key"
    else:
        token = bearer(headers)
        problem = token_live(state, state.azure_tokens, token)
        if problem is None:
            return f"entra token {redact(token)}"
    raise json_refusal(401, {"error": {
        "code": "401",
        "message": "Access denied due to invalid subscription key or wrong API endpoint. "
                   "Make sure to provide a valid key for an active subscription and use a "
                   "correct regional API endpoint for your resource."}}, problem)


def check_vertex(state, headers):
    token = bearer(headers)
    problem = token_live(state, state.google_tokens, token)
    if problem is None:
        return f"google token {redact(token)}"
    raise json_refusal(401, {"error": {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access "
                   "token, login cookie or other valid authentication credential. See "
                   "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "status": "UNAUTHENTICATED"}}, problem)


# ---------------------------------------------------------------- server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloud_front"
    state: State = None
    upstream = None  # (host, port)

    def log_request(self, code="-", size="-"):
        pass

    def log_message(self, format, *args):
        log(format % args)

    def _line(self, status, note):
        path = self.path.split("?", 1)[0]
        q = "?…" if "?" in self.path else ""
        log(f"{self.command} {path}{q} -> {status} ({note})")

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_simple(self, status, content_type, body, extra=None):
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def refuse(self, r: Refusal, path):
        self.state.reject(path, r.reason)
        self.send_simple(r.status, r.content_type, r.body, r.headers)
        self._line(r.status, r.reason)

    def handle_any(self):
        st = self.state
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self.send_simple(400, "text/plain", b"bad request body\n")
            self._line(400, "bad body")
            return
        split = urllib.parse.urlsplit(self.path)
        path, query = split.path, split.query
        try:
            self.route(st, path, query, body)
        except Refusal as r:
            self.refuse(r, path)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            self._line("-", "client went away")

    def route(self, st, path, query, body):
        method = self.command
        if path.startswith("/_front/"):
            return self.control(st, method, path, query)
        if path.startswith("/computeMetadata/") or path == "/":
            if not st.google or not st.google.get("metadata"):
                raise Refusal(404, "Not Found\n", "metadata not configured",
                              content_type="text/plain")
            try:
                status, ctype, out, note = handle_metadata(st, method, path, query, self.headers)
            except Refusal as r:
                r.headers.setdefault("Metadata-Flavor", "Google")
                raise
            return self.answer(status, ctype, out, note, {"Metadata-Flavor": "Google"})
        if path in ("/aws/sts/", "/aws/sts"):
            if not st.aws:
                raise json_refusal(404, {"message": "not found"}, "aws not configured")
            if st.is_down("sts"):
                raise sts_error(503, "ServiceUnavailable", "Service is unavailable.", "sts down",
                                "Receiver")
            return self.answer(*handle_sts(st, method, self.headers, body))
        if path == "/aws/pod-identity":
            if not st.aws:
                raise json_refusal(404, {"message": "not found"}, "aws not configured")
            if st.is_down("pod_identity"):
                raise json_refusal(503, {"code": "ServiceUnavailable",
                                         "message": "Service Unavailable"}, "pod_identity down")
            return self.answer(*handle_pod_identity(st, method, self.headers))
        if path == "/google/token":
            if not st.google:
                raise json_refusal(404, {"error": "not_found"}, "google not configured")
            if st.is_down("google_jwt"):
                raise json_refusal(503, {"error": "temporarily_unavailable",
                                         "error_description": "Service unavailable"},
                                   "google_jwt down")
            return self.answer(*handle_google_token(st, method, self.headers, body))
        m = re.fullmatch(r"/azure/([^/]+)/oauth2/v2\.0/token", path)
        if m:
            if not st.azure:
                raise json_refusal(404, {"error": "not_found"}, "azure not configured")
            if st.is_down("entra"):
                raise entra_error(503, "temporarily_unavailable", 50000,
                                  "There was an error issuing a token.", "entra down")
            return self.answer(*handle_entra(st, method, urllib.parse.unquote(m.group(1)),
                                            self.headers, body))
        for front in ("azure", "vertex", "bedrock"):
            prefix = f"/{front}"
            if path == prefix or path.startswith(prefix + "/"):
                section = {"azure": st.azure, "vertex": st.google, "bedrock": st.aws}[front]
                if not section:
                    raise json_refusal(404, {"message": "not found"}, f"{front} not configured")
                if front == "azure":
                    note = check_azure(st, self.headers)
                elif front == "vertex":
                    note = check_vertex(st, self.headers)
                else:
                    verify_sigv4(st, method, self.path, self.headers, body)
                    note = "sigv4"
                st.count_accepted(front)
                target = self.path[len(prefix):]
                if not target.startswith("/"):
                    target = "/" + target
                return self.forward(target, body, f"{front}: {note}")
        raise json_refusal(404, {"message": "not found"}, "no such endpoint")

    def answer(self, status, ctype, out, note, extra=None):
        self.send_simple(status, ctype, out, extra)
        self._line(status, note)

    def control(self, st, method, path, query):
        q = urllib.parse.parse_qs(query)
        if path == "/_front/stats" and method == "GET":
            with st.lock:
                out = {"issued": dict(st.issued), "accepted": dict(st.accepted),
                       "rejected": list(st.rejected)}
            return self.answer(200, "application/json", json.dumps(out).encode(), "stats")
        if path in ("/_front/down", "/_front/up") and method == "POST":
            names = q.get("endpoint", [])
            chosen = set()
            for n in names:
                if n == "all":
                    chosen |= set(ENDPOINTS)
                elif n in ENDPOINTS:
                    chosen.add(n)
                else:
                    raise json_refusal(400, {"error": f"unknown endpoint {n}"}, "bad control")
            if not chosen:
                raise json_refusal(400, {"error": "endpoint= required"}, "bad control")
            with st.lock:
                if path.endswith("down"):
                    st.down |= chosen
                else:
                    st.down -= chosen
                down = sorted(st.down)
            return self.answer(200, "application/json", json.dumps({"down": down}).encode(),
                               f"down={down}")
        if path == "/_front/ttl" and method == "POST":
            try:
                seconds = float(q["seconds"][0])
                if not seconds >= 0:
                    raise ValueError
            except (KeyError, ValueError, IndexError):
                raise json_refusal(400, {"error": "seconds= required"}, "bad control") from None
            with st.lock:
                st.ttl = seconds
            return self.answer(200, "application/json",
                               json.dumps({"token_ttl": seconds}).encode(), f"ttl={seconds}")
        raise json_refusal(404, {"error": "no such control"}, "no such control")

    def forward(self, target, body, note):
        host, port = self.upstream
        conn = http.client.HTTPConnection(host, port, timeout=300)
        headers = {}
        for k, v in self.headers.items():
            if k.lower() in HOP_BY_HOP or k.lower() in ("host", "content-length", "expect"):
                continue
            headers[k] = v
        headers["Host"] = f"{host}:{port}"
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        try:
            conn.request(self.command, target, body=body or None, headers=headers)
            resp = conn.getresponse()
        except OSError as e:
            conn.close()
            out = json.dumps({"error": {"message": f"upstream unreachable: {e}"}}).encode()
            self.send_simple(502, "application/json", out)
            self._line(502, f"{note}; upstream unreachable")
            return
        try:
            self.relay(resp)
        finally:
            conn.close()
        self._line(resp.status, note)

    def relay(self, resp):
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        for k, v in resp.getheaders():
            if k.lower() in HOP_BY_HOP or k.lower() == "content-length":
                continue
            self.send_header(k, v)
        chunked = False
        if no_body:
            if length is not None:
                self.send_header("Content-Length", length)
        elif length is not None:
            self.send_header("Content-Length", length)
        else:
            chunked = True
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if no_body:
            return
        while True:
            piece = resp.read1(65536)
            if not piece:
                break
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.wfile.write(piece)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = handle_any


# ---------------------------------------------------------------- main


def make_google_key(out, token_uri):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": SA_EMAIL,
        "client_id": str(100000000000000000000 + secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    }
    tmp = f"{out}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, out)


def watch_parent():
    while True:
        if os.getppid() != PARENT_PID:
            log("parent exited; stopping")
            os._exit(0)
        time.sleep(0.5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config")
    ap.add_argument("--make-google-key", metavar="OUT.json")
    ap.add_argument("--token-uri")
    args = ap.parse_args(argv)
    if args.make_google_key:
        if not args.token_uri:
            ap.error("--make-google-key needs --token-uri")
        make_google_key(args.make_google_key, args.token_uri)
        return 0
    if not args.config:
        ap.error("--config FILE is required")
    try:  # loaded now, so a missing one fails the start and no request waits on it
        import botocore.auth  # noqa: F401
        import cryptography  # noqa: F401
        import google.auth.jwt  # noqa: F401
    except ImportError as e:
        log(f"{e}: run make deps (botocore, google-auth, PyJWT, cryptography)")
        return 2
    with open(args.config, encoding="utf-8") as f:
        cfg = json.load(f)
    up = urllib.parse.urlsplit(cfg["upstream"])
    if up.scheme != "http" or not up.hostname:
        ap.error("upstream must be an http:// URL")
    Handler.state = State(cfg)
    Handler.upstream = (up.hostname, up.port or 80)
    host, _, port = cfg.get("listen", "127.0.0.1:0").rpartition(":")

    def stop(signum, _frame):
        log(f"signal {signum}; stopping")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=watch_parent, daemon=True).start()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128  # tests open many connections at once
    server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), Handler)
    bound = server.server_address[1]
    if cfg.get("port_file"):
        tmp = f"{cfg['port_file']}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"{bound}\n")
        os.replace(tmp, cfg["port_file"])
    log(f"listening on {host}:{bound}, upstream {cfg['upstream']}, sections "
        f"{[s for s in ('aws', 'google', 'azure') if cfg.get(s)]}")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
