from flask import jsonify, render_template, request
from flask_wtf.csrf import CSRFError


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def register_error_handlers(app):
    @app.errorhandler(CSRFError)
    def csrf_error(error):
        message = ("This form has expired or was not sent from our page (its security token is missing "
                   "or wrong). Please reload the page and try again.")
        return render_template("error.html", title="Please try again", message=message), 400

    @app.errorhandler(429)
    def too_many_requests(error):
        message = "Too many requests from your address. Please wait a while and try again."
        if _wants_json():
            return jsonify(error=message), 429
        return render_template("error.html", title="Slow down", message=message), 429

    @app.errorhandler(404)
    def not_found(error):
        if _wants_json():
            return jsonify(error="Not found."), 404
        return render_template("error.html", title="Not found",
                               message="There is no page at this address."), 404

    @app.errorhandler(405)
    def method_not_allowed(error):
        if _wants_json():
            return jsonify(error=f"Method {request.method} is not allowed here."), 405
        return error
