"use strict";
// The web page of fastvit serve: an image dropped, picked or pasted is sent to /v1/predict (and to
// /v1/embed when the embedding tab is open); the answers are shown as bars and numbers.

const $ = (id) => document.getElementById(id);
let shown = null; // the image on screen: answers for an older one are dropped
let embedded = null; // the image whose embedding is on screen

async function post(path, image) {
  const response = await fetch(path, {
    method: "POST",
    body: image,
    headers: { "Content-Type": image.type || "application/octet-stream" },
  });
  const answer = await response.json().catch(() => ({ reason: response.statusText }));
  if (!response.ok) throw new Error(`${response.status}: ${answer.reason}`);
  return answer;
}

function say(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

function show(image) {
  if (!image) return;
  shown = image;
  embedded = null;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(image);
  preview.hidden = false;
  $("prompt").classList.add("small");
  classify(image);
  if ($("tab-embedding").getAttribute("aria-selected") === "true") embed(image);
}

function classRow(entry) {
  const item = document.createElement("li");
  item.dataset.index = entry.index;
  item.dataset.probability = entry.probability;
  const name = document.createElement("span");
  name.className = "label";
  name.textContent = entry.label.split(",")[0];
  name.title = `${entry.label} (class ${entry.index})`;
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = `${(entry.probability * 100).toFixed(2)}%`;
  bar.append(fill);
  const percent = document.createElement("span");
  percent.className = "percent";
  percent.textContent = `${(entry.probability * 100).toFixed(1)} %`;
  item.append(name, bar, percent);
  return item;
}

async function classify(image) {
  $("classes").replaceChildren();
  document.body.dataset.classified = "no";
  say("classifying…");
  try {
    const answer = await post("v1/predict?top_k=5", image);
    if (image !== shown) return;
    $("classes").replaceChildren(...answer.top_k.map(classRow));
    document.body.dataset.classified = "yes";
    say("");
  } catch (error) {
    if (image === shown) say(error.message, true);
  }
}

async function embed(image) {
  embedded = image;
  for (const id of ["dimension", "norm"]) $(id).textContent = "…";
  $("values").textContent = "";
  try {
    const answer = await post("v1/embed", image);
    if (image !== shown) return;
    $("dimension").textContent = answer.size;
    $("norm").textContent = answer.norm.toFixed(4);
    const first = answer.embedding.slice(0, 8).map((value) => value.toFixed(4));
    $("values").textContent = `first values: ${first.join(", ")} …`;
  } catch (error) {
    embedded = null;
    if (image === shown) say(error.message, true);
  }
}

function selectTab(tab) {
  for (const each of document.querySelectorAll('[role="tab"]')) {
    const selected = each === tab;
    each.setAttribute("aria-selected", String(selected));
    $(each.getAttribute("aria-controls")).hidden = !selected;
  }
  if (tab.id === "tab-embedding" && shown && embedded !== shown) embed(shown);
}

async function describeModel() {
  try {
    const response = await fetch("v1/models");
    const answer = await response.json();
    if (response.status === 503) {
      $("model").textContent = "warming up…";
      setTimeout(describeModel, 2000);
      return;
    }
    if (!response.ok) throw new Error(answer.reason);
    const model = answer.models[0];
    const [, height, width] = model.input_size;
    const name = model.tag ? `${model.name}.${model.tag}` : model.checkpoint || model.name;
    $("model").textContent = `${name} · ${model.classes} classes · ${height}×${width} · ${model.precision}, ${model.backend}`;
  } catch (error) {
    $("model").textContent = `model unavailable: ${error.message}`;
  }
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => show(event.target.files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    show(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const item = [...event.clipboardData.items].find((each) => each.kind === "file" && each.type.startsWith("image/"));
    if (item) show(item.getAsFile());
  });
  for (const tab of document.querySelectorAll('[role="tab"]')) tab.addEventListener("click", () => selectTab(tab));
  describeModel();
}

setUp();
