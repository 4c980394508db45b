/* Newsletter signup for any site, without an iframe:
 *   <div data-newsletter-signup></div>
 *   <script src="https://NEWSLETTER_HOST/embed.js" defer></script>
 * It builds the box and posts to /api/v1/subscribe on the host the script came from. */
(function () {
  var script = document.currentScript;
  var base = new URL(script ? script.src : "/embed.js", window.location.href).origin;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text) node.textContent = text;
    return node;
  }

  function build(box) {
    var form = el("form", { "class": "newsletter-signup", novalidate: "" });
    form.appendChild(el("strong", {}, box.getAttribute("data-title") || "Sign up to receive our latest news!"));
    var email = el("input", { type: "email", name: "email", required: "", maxlength: "254", placeholder: "you@example.com", "aria-label": "Email address" });
    var consent = el("input", { type: "checkbox", name: "consent" });
    var label = el("label", {});
    var terms = el("a", { href: base + "/terms", target: "_blank", rel: "noopener" }, "terms");
    label.appendChild(consent);
    label.appendChild(document.createTextNode(" I agree to the "));
    label.appendChild(terms);
    var button = el("button", { type: "submit" }, "Sign up");
    var message = el("p", { role: "status" });
    [email, label, button, message].forEach(function (n) { form.appendChild(n); });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      button.disabled = true;
      fetch(base + "/api/v1/subscribe", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ email: email.value, consent: consent.checked, source: "embed.js: " + window.location.href })
      }).then(function (r) { return r.json(); })
        .then(function (body) { message.textContent = body.message || body.error; })
        .catch(function () { message.textContent = "Could not reach the newsletter service. Please try again."; })
        .then(function () { button.disabled = false; });
    });
    box.appendChild(form);
  }

  document.querySelectorAll("[data-newsletter-signup]").forEach(build);
})();
