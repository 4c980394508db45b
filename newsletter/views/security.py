from flask import current_app, request

BASE_CSP = ("default-src 'self'; img-src 'self' data: https:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'")


def register_security_headers(app):
    @app.after_request
    def security_headers(response):
        if request.endpoint in ("public.embed", "public.embed_check_email"):
            origins = current_app.config["EMBED_ALLOWED_ORIGINS"].replace(",", " ")
            frame_ancestors = "*" if origins.strip() == "*" else origins
        else:
            frame_ancestors = "'none'"
        response.headers.setdefault("Content-Security-Policy", f"{BASE_CSP}; frame-ancestors {frame_ancestors}")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        return response
