// The API browser: Swagger UI over the service's OpenAPI document. Requests go out with the
// page session's cookie; those that change something carry its anti-forgery token too.
(function () {
  'use strict';
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute('content') : '';
  window.SwaggerUIBundle({
    url: '/api/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    docExpansion: 'none',
    tryItOutEnabled: false,
    requestInterceptor: function (request) {
      var method = (request.method || 'GET').toUpperCase();
      if (method !== 'GET' && method !== 'HEAD' && csrf) request.headers['X-CSRF-Token'] = csrf;
      return request;
    },
  });
})();
