// pm2's ecosystem file, as pm2 users write it.
const base = {
  kill_timeout: 3000,
  min_uptime: '5s',
};

console.log('configs may print; keel ignores it');

module.exports = {
  apps: [
    {
      ...base,
      name: 'web',
      script: './server.js',
      args: '--port 3000',
      instances: 'max',
      exec_mode: 'cluster',
      wait_ready: true,
      listen_timeout: 8000,
      max_memory_restart: '150M',
      node_args: '--max-old-space-size=256',
      env: { NODE_ENV: 'production', WORKERS: 2 },
      env_production: { NODE_ENV: 'production' },
      port: 3000,
      out_file: './logs/out.log',
      error_file: './logs/err.log',
      log_date_format: 'YYYY-MM-DD HH:mm Z',
      merge_logs: true,
      watch: true,
      ignore_watch: ['node_modules', 'logs'],
      exp_backoff_restart_delay: 100,
      max_restarts: 10,
      cron_restart: '0 0 * * *',
    },
    {
      name: 'jobs',
      script: 'worker.py',
      cwd: 'jobs',
      interpreter: 'python3',
      autorestart: false,
      instances: 1,
      exec_mode: 'fork',
      stop_exit_codes: [0],
      restart_delay: 2000,
      treekill: true,
    },
  ],
  deploy: {
    production: { user: 'node', host: '212.83.163.1', ref: 'origin/main' },
  },
};
