def test_healthz_and_signin(any_api):
    r = any_api.client.get("/healthz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"
    u = any_api.user()
    c = any_api.client_for(u)
    assert c.get("/api/v1/account").json()["username"] == u.username
