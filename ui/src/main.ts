// The viewer's entry point (placeholder while the page is written).
const app = document.getElementById("app");
if (app) app.textContent = "annostore viewer";
