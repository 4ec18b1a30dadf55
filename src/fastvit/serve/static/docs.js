"use strict";
// Renders /openapi.json as a list of operations: parameters, request bodies and responses.

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function operation(path, method, spec) {
  const section = element("section", undefined, "operation");
  const title = element("h2");
  title.append(element("span", method.toUpperCase(), `method ${method}`), ` ${path}`);
  section.append(title, element("p", spec.summary));
  if (spec.parameters) {
    const list = element("ul");
    for (const parameter of spec.parameters) {
      list.append(element("li", `?${parameter.name} (${parameter.schema.type}): ${parameter.description}`));
    }
    section.append(element("h3", "Query parameters"), list);
  }
  if (spec.requestBody) {
    section.append(element("h3", "Body"), element("p", Object.keys(spec.requestBody.content).join(", ")));
  }
  const responses = element("ul");
  for (const [status, response] of Object.entries(spec.responses)) {
    responses.append(element("li", `${status}: ${response.description}`));
  }
  section.append(element("h3", "Responses"), responses);
  return section;
}

async function render() {
  const document_ = await (await fetch("openapi.json")).json();
  const operations = document.getElementById("operations");
  operations.append(element("p", document_.info.description));
  if (document_.security) {
    operations.append(element("p", "Every route but /healthz needs the API key: Authorization: Bearer KEY, X-API-Key: KEY, or basic authentication with the key as password."));
  }
  for (const [path, methods] of Object.entries(document_.paths)) {
    for (const [method, spec] of Object.entries(methods)) operations.append(operation(path, method, spec));
  }
}

render();
