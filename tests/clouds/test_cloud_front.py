#!/usr/bin/env python3
"""Self-test of cloud_front.py: a fake upstream in this process, the front as
a subprocess, and the clouds' own client libraries (botocore, google-auth)
talking to it the way the SDKs do. All on 127.0.0.1; run as
``python3 tests/clouds/test_cloud_front.py`` (KEEP_CLOUD_FRONT_LOGS=1 keeps
the front's stderr logs)."""

import http.client
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
FRONT = os.path.join(HERE, "cloud_front.py")
REGION = "us-east-1"
ROLE = "arn:aws:iam::111122223333:role/llm"
IRSA = "eyJhbGciOiJSUzI1NiJ9.irsa-test-token.sig"
POD_TOKEN = "pod-identity-token"
AZ_TOKEN = "eyJhbGciOiJSUzI1NiJ9.azure-federated.sig"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"

# botocore must not pick up a developer's own AWS settings.
for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
            "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN"):
    os.environ.pop(var, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

import botocore.session  # noqa: E402
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import ContainerProvider, Credentials  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

STREAM_GATE = threading.Event()


class UrllibRequest:
    """google-auth's transport interface (google.auth.transport.Request) over
    urllib, so google-auth's own credentials make their HTTP calls without
    the requests / urllib3 extras."""

    class Response:
        def __init__(self, status, headers, data):
            self.status, self.headers, self.data = status, headers, data

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        import urllib.error
        import urllib.request

        if isinstance(body, str):
            body = body.encode()
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout or 10) as resp:
                return self.Response(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as e:
            return self.Response(e.code, e.headers, e.read())


class Upstream(BaseHTTPRequestHandler):
    """Echoes what it got; /stream answers SSE in two pieces, the second only
    once the test has seen the first (so it proves the front streams)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, piece in enumerate((b"data: one\n\n", b"data: two\n\n")):
                if i == 1:
                    STREAM_GATE.wait(10)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        out = json.dumps({
            "method": self.command, "path": self.path, "body": body.decode("utf-8", "replace"),
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _any


def start_front(tmp, cfg, name):
    port_file = os.path.join(tmp, f"{name}.port")
    cfg = dict(cfg, listen="127.0.0.1:0", port_file=port_file)
    path = os.path.join(tmp, f"{name}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(tmp, f"{name}.log"), "wb") as log:
        proc = subprocess.Popen([sys.executable, FRONT, "--config", path], stderr=log,
                                stdout=subprocess.DEVNULL)
    deadline = time.time() + 20
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"front did not start; see {log.name}")
        time.sleep(0.05)
    with open(port_file) as f:
        return proc, int(f.read())


class CloudFront(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="cloud_front_")
        cls.upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        cls.upstream.daemon_threads = True
        threading.Thread(target=cls.upstream.serve_forever, daemon=True).start()
        up = f"http://127.0.0.1:{cls.upstream.server_address[1]}"
        cls.key_file = os.path.join(cls.tmp, "sa.json")
        cfg = {
            "upstream": up, "token_ttl": 30,
            "aws": {"region": REGION, "static": [["AKIDSTATIC", "secretstatic"]],
                    "role_arn": ROLE, "web_identity_token": IRSA,
                    "pod_identity_token": POD_TOKEN},
            "google": {"service_account_key_file": cls.key_file, "metadata": True},
            "azure": {"api_key": "azkey", "tenant": "tenant-1", "client_id": "client-1",
                      "federated_token": AZ_TOKEN},
        }
        cls.proc, cls.port = start_front(cls.tmp, cfg, "front")
        cls.base = f"http://127.0.0.1:{cls.port}"
        token_uri = f"{cls.base}/google/token"
        cls.other_key = os.path.join(cls.tmp, "other.json")
        for out in (cls.key_file, cls.other_key):
            subprocess.run([sys.executable, FRONT, "--make-google-key", out, "--token-uri",
                            token_uri], check=True)
        # The other key claims the configured key's id, so only its signature
        # gives it away.
        with open(cls.key_file) as f:
            kid = json.load(f)["private_key_id"]
        with open(cls.other_key) as f:
            other = json.load(f)
        with open(cls.other_key, "w") as f:
            json.dump(dict(other, private_key_id=kid), f)
        # Only azure: the other clouds' endpoints are 404 there.
        cls.proc2, cls.port2 = start_front(cls.tmp, {"upstream": up, "azure": cfg["azure"]},
                                           "azure_only")

    @classmethod
    def tearDownClass(cls):
        for p in (cls.proc, cls.proc2):
            p.terminate()
            p.wait(10)
        cls.upstream.shutdown()
        cls.upstream.server_close()
        if os.environ.get("KEEP_CLOUD_FRONT_LOGS"):
            print(f"front logs kept in {cls.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- helpers

    def http(self, method, path, body=None, headers=None, port=None):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=20)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def form(self, path, fields, port=None):
        return self.http("POST", path, urllib.parse.urlencode(fields),
                         {"Content-Type": "application/x-www-form-urlencoded"}, port)

    def stats(self):
        return json.loads(self.http("GET", "/_front/stats")[2])

    def control(self, what):
        status, _, _ = self.http("POST", f"/_front/{what}")
        self.assertEqual(status, 200)

    def sts_client(self):
        return botocore.session.get_session().create_client(
            "sts", region_name=REGION, endpoint_url=f"{self.base}/aws/sts/")

    def assume(self):
        out = self.sts_client().assume_role_with_web_identity(
            RoleArn=ROLE, RoleSessionName="llmesh-test", WebIdentityToken=IRSA)
        c = out["Credentials"]
        return Credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]), c

    def bedrock(self, creds, region=REGION):
        return botocore.session.get_session().create_client(
            "bedrock-runtime", region_name=region, endpoint_url=f"{self.base}/bedrock",
            aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
            aws_session_token=creds.token)

    def invoke(self, creds, region=REGION):
        out = self.bedrock(creds, region).invoke_model(
            modelId=MODEL, body=b'{"messages":[]}', contentType="application/json")
        return json.loads(out["body"].read())

    def signed(self, creds, path, body=b"{}", region=REGION, service="bedrock"):
        req = AWSRequest(method="POST", url=f"{self.base}{path}", data=body,
                         headers={"Content-Type": "application/json"})
        SigV4Auth(creds, service, region).add_auth(req)
        return dict(req.headers.items())

    def assert_aws_refused(self, status, headers, body, kind, text):
        self.assertEqual(status, 403, body)
        self.assertEqual(headers.get("x-amzn-errortype"), kind)
        self.assertIn(text, json.loads(body)["message"])

    def google_creds(self, key_file):
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_file(
            key_file, scopes=["https://www.googleapis.com/auth/cloud-platform"])

    def google_request(self):
        return UrllibRequest()

    def entra(self, **override):
        fields = {
            "client_id": "client-1",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": AZ_TOKEN, "grant_type": "client_credentials",
            "scope": "https://cognitiveservices.azure.com/.default", "client_info": "1",
        }
        fields.update(override)
        tenant = fields.pop("tenant", "tenant-1")
        return self.form(f"/azure/{tenant}/oauth2/v2.0/token", fields)

    # -- AWS

    def test_bedrock_static_key_and_colon_in_path(self):
        echo = self.invoke(Credentials("AKIDSTATIC", "secretstatic"))
        self.assertEqual(echo["method"], "POST")
        self.assertEqual(echo["path"], "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke")
        self.assertEqual(echo["body"], '{"messages":[]}')

    def test_sts_session_credentials_sign_bedrock(self):
        creds, raw = self.assume()
        self.assertTrue(raw["AccessKeyId"].startswith("ASIA"))
        again, _ = self.assume()
        self.assertNotEqual(creds.access_key, again.access_key)
        self.assertNotEqual(creds.token, again.token)
        left = raw["Expiration"].timestamp() - time.time()
        self.assertTrue(25 <= left <= 31, left)
        echo = self.invoke(creds)
        self.assertEqual(echo["path"], "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke")
        self.assertEqual(echo["headers"]["x-amz-security-token"], creds.token)

    def test_sts_refusals(self):
        sts = self.sts_client()
        with self.assertRaises(ClientError) as e:
            sts.assume_role_with_web_identity(RoleArn=ROLE, RoleSessionName="s1",
                                              WebIdentityToken="eyJ.wrong.token")
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidIdentityToken")
        self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 400)
        with self.assertRaises(ClientError) as e:
            sts.assume_role_with_web_identity(RoleArn="arn:aws:iam::111122223333:role/other",
                                              RoleSessionName="s1", WebIdentityToken=IRSA)
        self.assertEqual(e.exception.response["Error"]["Code"], "AccessDenied")
        status, _, body = self.form("/aws/sts/", {"Action": "AssumeRoleWithWebIdentity",
                                                  "Version": "2011-06-15", "RoleArn": ROLE,
                                                  "WebIdentityToken": IRSA})
        self.assertEqual(status, 400)
        self.assertIn(b"<Code>MissingParameter</Code>", body)
        status, _, body = self.http("POST", "/aws/sts/", json.dumps({
            "Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "RoleArn": ROLE,
            "RoleSessionName": "s1", "WebIdentityToken": IRSA}),
            {"Content-Type": "application/json"})
        self.assertEqual(status, 400)
        self.assertIn(b"<ErrorResponse", body)

    def test_pod_identity(self):
        provider = ContainerProvider(environ={
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{self.base}/aws/pod-identity",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": POD_TOKEN})
        creds = provider.load().get_frozen_credentials()
        self.assertTrue(creds.token)
        echo = self.invoke(creds)
        self.assertEqual(echo["headers"]["x-amz-security-token"], creds.token)
        self.assertEqual(self.http("GET", "/aws/pod-identity")[0], 401)
        self.assertEqual(self.http("GET", "/aws/pod-identity", headers={
            "Authorization": "wrong"})[0], 403)

    def test_bedrock_wrong_region(self):
        with self.assertRaises(ClientError) as e:
            self.invoke(Credentials("AKIDSTATIC", "secretstatic"), region="us-west-2")
        self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 403)
        self.assertIn("valid region", e.exception.response["Error"]["Message"])
        path = "/bedrock/model/x/invoke"
        h = self.signed(Credentials("AKIDSTATIC", "secretstatic"), path, region="eu-west-1")
        self.assert_aws_refused(*self.http("POST", path, b"{}", h), "InvalidSignatureException",
                                "Credential should be scoped to a valid region.")

    def test_bedrock_tampered_body_and_bad_secret(self):
        path = "/bedrock/model/x%3Ay/invoke"
        h = self.signed(Credentials("AKIDSTATIC", "secretstatic"), path, b'{"a":1}')
        self.assertEqual(self.http("POST", path, b'{"a":1}', h)[0], 200)
        self.assert_aws_refused(*self.http("POST", path, b'{"a":2}', h),
                                "InvalidSignatureException", "does not match")
        h = self.signed(Credentials("AKIDSTATIC", "not-the-secret"), path)
        self.assert_aws_refused(*self.http("POST", path, b"{}", h),
                                "InvalidSignatureException", "does not match")
        h = self.signed(Credentials("AKIDUNKNOWN", "x"), path)
        self.assert_aws_refused(*self.http("POST", path, b"{}", h),
                                "UnrecognizedClientException", "invalid")
        self.assertEqual(self.http("POST", path, b"{}")[0], 403)

    def test_bedrock_missing_security_token(self):
        creds, _ = self.assume()
        path = "/bedrock/model/x/invoke"
        h = self.signed(creds, path)
        del h["X-Amz-Security-Token"]
        self.assert_aws_refused(*self.http("POST", path, b"{}", h),
                                "UnrecognizedClientException", "security token")

    def test_bedrock_old_signature(self):
        path = "/bedrock/model/x/invoke"
        h = self.signed(Credentials("AKIDSTATIC", "secretstatic"), path)
        old = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 600))
        h["X-Amz-Date"] = old
        h["Authorization"] = h["Authorization"].replace(
            h["Authorization"].split("/")[1], old[:8], 1)
        self.assert_aws_refused(*self.http("POST", path, b"{}", h),
                                "InvalidSignatureException", "Signature expired")

    def test_bedrock_stream_forwarded_in_pieces(self):
        STREAM_GATE.clear()
        path = "/bedrock/stream?x=1"
        h = self.signed(Credentials("AKIDSTATIC", "secretstatic"), path)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        conn.request("POST", path, b"{}", h)
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("Content-Type"), "text/event-stream")
        first = resp.read1(1024)  # arrives while the upstream holds the rest back
        self.assertEqual(first, b"data: one\n\n")
        STREAM_GATE.set()
        self.assertEqual(resp.read(), b"data: two\n\n")
        conn.close()

    def test_bedrock_chunked_request_body(self):
        path = "/bedrock/model/x/invoke"
        body = b'{"prompt":"' + b"x" * 5000 + b'"}'
        h = self.signed(Credentials("AKIDSTATIC", "secretstatic"), path, body)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        conn.request("POST", path, iter([body[:100], body[100:]]), h, encode_chunked=True)
        resp = conn.getresponse()
        echo = json.loads(resp.read())
        conn.close()
        self.assertEqual(resp.status, 200)
        self.assertEqual(echo["body"], body.decode())

    def test_keep_alive_after_refusal(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        for key, want in (("wrong", 401), ("azkey", 200), ("wrong", 401), ("azkey", 200)):
            conn.request("POST", "/azure/openai/x", b'{"a":1}', {"api-key": key})
            resp = conn.getresponse()
            resp.read()
            self.assertEqual(resp.status, want)
        conn.close()

    # -- Google

    def test_google_service_account_jwt_and_vertex(self):
        creds = self.google_creds(self.key_file)
        creds.refresh(self.google_request())
        self.assertTrue(creds.token.startswith("ya29."))
        status, _, body = self.http(
            "POST", "/vertex/v1/projects/p/locations/us-central1/publishers/google/models/"
            "gemini-2.0-flash:generateContent?alt=sse", b"{}",
            {"Authorization": f"Bearer {creds.token}"})
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["path"], "/v1/projects/p/locations/us-central1/"
                         "publishers/google/models/gemini-2.0-flash:generateContent?alt=sse")
        status, _, body = self.http("POST", "/vertex/v1/x", b"{}",
                                    {"Authorization": "Bearer ya29.made-up"})
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(body)["error"]["status"], "UNAUTHENTICATED")

    def test_google_jwt_signed_by_another_key(self):
        import google.auth.exceptions

        creds = self.google_creds(self.other_key)
        with self.assertRaises(google.auth.exceptions.RefreshError) as e:
            creds.refresh(self.google_request())
        self.assertIn("invalid_grant", str(e.exception))
        self.assertIn("Invalid JWT Signature", str(e.exception))
        reasons = [r["reason"] for r in self.stats()["rejected"] if r["path"] == "/google/token"]
        self.assertTrue(any(r.startswith("bad JWT signature") for r in reasons), reasons)
        status, _, body = self.form("/google/token", {"grant_type": "password",
                                                      "assertion": "x"})
        self.assertEqual(status, 400)

    def test_google_jwt_claims(self):
        """Assertions google-auth would never make, signed with the right key
        by PyJWT: each wrong claim is refused on its own."""
        import jwt

        with open(self.key_file) as f:
            key = json.load(f)
        now = int(time.time())
        good = {"iss": key["client_email"], "aud": key["token_uri"], "iat": now,
                "exp": now + 3600, "scope": "https://www.googleapis.com/auth/cloud-platform"}

        def grant(claims, kid=key["private_key_id"], alg="RS256", secret=key["private_key"]):
            assertion = jwt.encode(claims, secret, algorithm=alg, headers={"kid": kid})
            status, _, body = self.form("/google/token", {
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion})
            return status, json.loads(body)

        status, body = grant(good)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["token_type"], "Bearer")
        self.assertEqual(grant(dict(good, aud="https://oauth2.googleapis.com/token"))[0], 200)
        for bad in (dict(good, iss="someone@else.iam.gserviceaccount.com"),
                    dict(good, aud="https://example.com/token"),
                    dict(good, exp=now + 7200),
                    dict(good, iat=now - 600, exp=now + 3000),
                    dict(good, iat=now - 4000, exp=now - 400)):
            status, body = grant(bad)
            self.assertEqual((status, body["error"]), (400, "invalid_grant"), bad)
        status, body = grant(dict(good, scope="https://www.googleapis.com/auth/devstorage"))
        self.assertEqual((status, body["error"]), (400, "invalid_scope"))
        self.assertEqual(grant(good, kid="0" * 40)[0], 400)
        # Any other algorithm is refused, whatever it was keyed with.
        assertion = jwt.encode(good, "k" * 32, algorithm="HS256",
                               headers={"kid": key["private_key_id"]})
        status, _, body = self.form("/google/token", {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})
        self.assertEqual((status, json.loads(body)["error"]), (400, "invalid_grant"))

    def test_gke_metadata(self):
        os.environ["GCE_METADATA_HOST"] = f"127.0.0.1:{self.port}"
        import google.auth.compute_engine._metadata as metadata

        importlib.reload(metadata)
        import google.auth.compute_engine.credentials as ce

        importlib.reload(ce)
        creds = ce.Credentials()
        creds.refresh(self.google_request())
        self.assertTrue(creds.token.startswith("ya29."))
        status, _, _ = self.http("GET", "/vertex/v1/x",
                                 headers={"Authorization": f"Bearer {creds.token}"})
        self.assertEqual(status, 200)
        path = "/computeMetadata/v1/instance/service-accounts/default/token"
        status, headers, _ = self.http("GET", path)
        self.assertEqual(status, 403)
        status, _, body = self.http("GET", "/computeMetadata/v1/project/project-id",
                                    headers={"Metadata-Flavor": "Google"})
        self.assertEqual((status, body), (200, b"test-project"))

    # -- Azure

    def test_entra_token_and_azure(self):
        status, _, body = self.entra()
        self.assertEqual(status, 200, body)
        tok = json.loads(body)
        self.assertEqual((tok["token_type"], tok["expires_in"]), ("Bearer", 30))
        path = "/azure/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        status, _, body = self.http("POST", path, b"{}",
                                    {"Authorization": f"Bearer {tok['access_token']}"})
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["path"],
                         "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21")
        self.assertEqual(self.http("POST", path, b"{}", {"api-key": "azkey"})[0], 200)
        status, _, body = self.http("POST", path, b"{}", {"api-key": "wrong"})
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(body)["error"]["code"], "401")
        self.assertEqual(self.http("POST", path, b"{}")[0], 401)

    def test_entra_refusals(self):
        status, _, body = self.entra(client_assertion="eyJ.other.token")
        self.assertEqual((status, json.loads(body)["error"]), (401, "invalid_client"))
        self.assertTrue(json.loads(body)["error_description"].startswith("AADSTS"))
        status, _, body = self.entra(tenant="tenant-2")
        self.assertEqual((status, json.loads(body)["error"]), (400, "invalid_request"))
        status, _, _ = self.entra(scope="https://management.azure.com/.default")
        self.assertEqual(status, 400)
        status, _, _ = self.entra(client_assertion_type="x")
        self.assertEqual(status, 400)

    # -- expiry, control, missing sections

    def test_tokens_expire_after_ttl(self):
        self.control("ttl?seconds=1")
        try:
            _, _, body = self.entra()
            az = json.loads(body)["access_token"]
            creds = self.google_creds(self.key_file)
            creds.refresh(self.google_request())
            aws, _ = self.assume()
        finally:
            self.control("ttl?seconds=30")
        time.sleep(1.3)
        path = "/azure/openai/x"
        self.assertEqual(self.http("POST", path, b"{}", {"Authorization": f"Bearer {az}"})[0],
                         401)
        self.assertEqual(self.http("POST", "/vertex/v1/x", b"{}",
                                   {"Authorization": f"Bearer {creds.token}"})[0], 401)
        path = "/bedrock/model/x/invoke"
        self.assert_aws_refused(*self.http("POST", path, b"{}", self.signed(aws, path)),
                                "ExpiredTokenException", "expired")

    def test_endpoints_down_answer_503(self):
        self.control("down?endpoint=all")
        try:
            self.assertEqual(self.form("/aws/sts/", {"Action": "AssumeRoleWithWebIdentity"})[0],
                             503)
            self.assertEqual(self.http("GET", "/aws/pod-identity",
                                       headers={"Authorization": POD_TOKEN})[0], 503)
            self.assertEqual(self.form("/google/token", {})[0], 503)
            self.assertEqual(self.http("GET", "/computeMetadata/v1/instance/service-accounts/"
                                       "default/token",
                                       headers={"Metadata-Flavor": "Google"})[0], 503)
            self.assertEqual(self.entra()[0], 503)
        finally:
            self.control("up?endpoint=all")
        self.control("down?endpoint=entra")
        try:
            self.assertEqual(self.entra()[0], 503)
            self.assertEqual(self.http("GET", "/aws/pod-identity",
                                       headers={"Authorization": POD_TOKEN})[0], 200)
        finally:
            self.control("up?endpoint=entra")
        self.assertEqual(self.entra()[0], 200)

    def test_stats(self):
        self.http("POST", "/azure/openai/x", b"{}", {"api-key": "azkey"})
        self.http("POST", "/azure/openai/x", b"{}", {"api-key": "nope"})
        s = self.stats()
        self.assertEqual(set(s["issued"]),
                         {"sts", "pod_identity", "google_jwt", "gke_metadata", "entra"})
        self.assertGreaterEqual(s["accepted"]["azure"], 1)
        self.assertIn({"path": "/azure/openai/x", "reason": "wrong api-key"}, s["rejected"])
        for r in s["rejected"]:
            self.assertNotIn("nope", json.dumps(r))

    def test_missing_section_is_404(self):
        for method, path in (("POST", "/aws/sts/"), ("GET", "/aws/pod-identity"),
                             ("POST", "/google/token"), ("POST", "/bedrock/model/x/invoke"),
                             ("POST", "/vertex/v1/x"),
                             ("GET", "/computeMetadata/v1/project/project-id")):
            self.assertEqual(self.http(method, path, b"", port=self.port2)[0], 404, path)
        self.assertEqual(self.http("POST", "/azure/openai/x", b"{}", {"api-key": "azkey"},
                                   port=self.port2)[0], 200)

    def test_zz_log_has_no_secrets(self):
        time.sleep(0.2)
        with open(os.path.join(self.tmp, "front.log"), encoding="utf-8") as f:
            text = f.read()
        self.assertIn("POST /bedrock/", text)
        for secret in ("secretstatic", "azkey", IRSA, POD_TOKEN, AZ_TOKEN):
            self.assertNotIn(secret, text)

    def test_exits_when_parent_dies(self):
        cfg = os.path.join(self.tmp, "orphan.json")
        port_file = os.path.join(self.tmp, "orphan.port")
        with open(cfg, "w") as f:
            json.dump({"upstream": "http://127.0.0.1:1", "listen": "127.0.0.1:0",
                       "port_file": port_file}, f)
        pid_file = os.path.join(self.tmp, "orphan.pid")
        # A shell parent that starts the front, notes its pid, and exits.
        subprocess.run(["sh", "-c", f'"{sys.executable}" "{FRONT}" --config "{cfg}" '
                        f'2>/dev/null & echo $! > "{pid_file}"; sleep 1'], check=True)
        with open(pid_file) as f:
            pid = int(f.read())
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        return  # exited; its new parent has not reaped it yet
            except FileNotFoundError:
                return
            time.sleep(0.1)
        os.kill(pid, 9)
        self.fail("the front outlived its parent")


if __name__ == "__main__":
    unittest.main(verbosity=2)
