// Starts Swagger UI on the page's container; the document's URL is its data-spec.
// A file of its own (not an inline script) so the page's CSP needs no 'unsafe-inline'.
(function () {
  "use strict";
  var container = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: container.getAttribute("data-spec"),
    domNode: container,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    persistAuthorization: false,
    tryItOutEnabled: false,
  });
})();
