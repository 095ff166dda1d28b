// Waypost's GraphiQL page: the endpoint comes from the script tag; credentials go in the
// Headers tab ({"Authorization": "Bearer wp_..."}), never into the page itself.
(function () {
  "use strict";
  var script = document.currentScript;
  var endpoint = script.getAttribute("data-endpoint");
  var root = document.getElementById("graphiql");
  document.body.style.margin = "0";
  root.style.height = "100vh";
  var fetcher = GraphiQL.createFetcher({ url: endpoint });
  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: "headers",
      defaultHeaders: '{\n  "Authorization": "Bearer <your API key or access token>"\n}',
      shouldPersistHeaders: false,
      defaultQuery:
        "# Waypost's GraphQL: EPR's queries and mutations, and pages, gates, completions.\n" +
        "# Put your credential in the Headers tab below, then run:\n" +
        "query {\n  events_page(limit: 10) {\n    items { id name version release platform_id package success created_at }\n    next_cursor\n  }\n}\n",
    })
  );
})();
