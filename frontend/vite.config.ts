import { defineConfig } from 'vitest/config';

// The bundle is committed (frontend/dist) and embedded in the gateway binary, so the build must be
// reproducible: fixed file names (no content hashes; the gateway serves them with revalidation),
// no source maps, relative URLs so the page also works under a path prefix.
export default defineConfig({
  base: './',
  // Preact's automatic JSX runtime, without a framework plugin.
  oxc: {
    jsx: { runtime: 'automatic', importSource: 'preact' },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2020',
    sourcemap: false,
    modulePreload: { polyfill: false },
    cssCodeSplit: false,
    assetsInlineLimit: 0,
    reportCompressedSize: true,
    rolldownOptions: {
      output: {
        entryFileNames: 'assets/index.js',
        chunkFileNames: 'assets/[name].js',
        // The one stylesheet (ours + uPlot's) is assets/index.css whatever Vite calls it.
        assetFileNames: (info) =>
          (info.names ?? []).some((n) => n.endsWith('.css')) ? 'assets/index.css' : 'assets/[name][extname]',
      },
    },
  },
  server: {
    // `npm run dev` against a gateway on :8080.
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/ws': { target: 'ws://127.0.0.1:8080', ws: true },
    },
  },
  test: {
    include: ['test/**/*.test.{ts,tsx}'],
    environment: 'node',
    watch: false,
  },
});
