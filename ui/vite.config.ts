// Vite builds the viewer into `dist/` (or the folder `ANNOSTORE_UI_OUT` names: api/build.rs
// points it into cargo's OUT_DIR). `base` is where `annostore serve` mounts it.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/ui/",
  build: {
    outDir: process.env.ANNOSTORE_UI_OUT ?? "dist",
    emptyOutDir: true,
    // Inline nothing: the server's Content-Security-Policy allows only files from itself.
    assetsInlineLimit: 0,
    sourcemap: false,
  },
});
