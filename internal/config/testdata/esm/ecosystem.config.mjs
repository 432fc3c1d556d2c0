// An ES module ecosystem file.
export default {
  apps: [{ name: 'esm-web', script: 'server.js', instances: 2, exec_mode: 'cluster' }],
};
