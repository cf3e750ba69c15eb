// Starts Swagger UI on tabagent's /docs. The description comes from
// /docs/openapi.yaml, which needs no key (as /docs itself); every operation but
// /health needs the API key: press Authorize and paste what `tabagent token`
// prints, as `bearer` or `apiKey`. persistAuthorization keeps it in this
// browser's localStorage, for this origin only, until Logout.
'use strict';
window.addEventListener('load', () => {
  window.ui = SwaggerUIBundle({
    url: '/docs/openapi.yaml',
    dom_id: '#swagger-ui',
    deepLinking: true,
    persistAuthorization: true,
    displayRequestDuration: true,
    // Never send the description to the public validator.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
  });
});
