def test_healthz_and_signin(any_api):
    r = any_api.client.get("/healthz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"
    u = any_api.user()
    c = any_api.client_for(u)
    assert c.get("/api/v1/account").json()["username"] == u.username


def test_api_docs_load_nothing_from_the_internet(api):
    """Swagger UI comes from the packaged npm module, so the page works on an air-gapped site."""
    import re

    page = api.client.get("/api/v1/docs")
    assert page.status_code == 200, page.text
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    js = api.client.get("/vendor/swagger-ui-dist/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert api.client.get("/api/v1/openapi.json").json()["paths"]
