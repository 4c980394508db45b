from flask import current_app, request

# No inline script anywhere, no inline style on our own pages. frame-ancestors is set per page.
BASE_CSP = ("default-src 'self'; img-src 'self' data: https:; style-src 'self'; script-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'")
# The dev mail viewer shows emails (inline styles by nature) in a sandboxed srcdoc frame, which
# inherits this page's policy.
INLINE_STYLE_ENDPOINTS = {"devmail.show"}
EMBED_ENDPOINTS = {"public.embed", "public.embed_check_email"}
# A year, subdomains too: once a browser saw it, it never speaks plain http to us (SSL stripping).
HSTS = "max-age=31536000; includeSubDomains"


def register_security_headers(app):
    @app.after_request
    def security_headers(response):
        if request.endpoint in EMBED_ENDPOINTS:
            origins = [o.strip() for o in current_app.config["EMBED_ALLOWED_ORIGINS"].split(",") if o.strip()]
            frame_ancestors = "*" if "*" in origins else " ".join(origins) or "'none'"
        else:
            frame_ancestors = "'none'"
        policy = BASE_CSP
        if request.endpoint in INLINE_STYLE_ENDPOINTS:
            policy = policy.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
        response.headers.setdefault("Content-Security-Policy", f"{policy}; frame-ancestors {frame_ancestors}")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        if current_app.config["BASE_URL"].startswith("https://"):
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        if frame_ancestors == "'none'":
            response.headers.setdefault("X-Frame-Options", "DENY")  # for browsers without CSP level 2
        return response
