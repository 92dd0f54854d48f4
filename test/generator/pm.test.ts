/** Package manager detection and commands. */
import t from 'tap';
import { detectPackageManager, parsePackageManager, runScript } from '../../generator/pm.js';
import { envPrefixOf, projectNameOf } from '../../generator/generators.js';

t.test('detects the package manager from npm_config_user_agent', async (t) => {
  t.equal(detectPackageManager('pnpm/9.1.0 npm/? node/v20.11.0 linux x64'), 'pnpm');
  t.equal(detectPackageManager('yarn/1.22.22 npm/? node/v20.11.0 linux x64'), 'yarn');
  t.equal(detectPackageManager('npm/10.8.2 node/v20.20.2 linux x64 workspaces/false'), 'npm');
  t.equal(detectPackageManager('bun/1.1.0'), 'npm', 'anything else: npm');
  t.equal(detectPackageManager(''), 'npm');
});

t.test('commands', async (t) => {
  t.equal(runScript('npm', 'start'), 'npm start');
  t.equal(runScript('npm', 'dev'), 'npm run dev');
  t.equal(runScript('pnpm', 'dev'), 'pnpm dev');
  t.equal(parsePackageManager('yarn'), 'yarn');
  t.throws(() => parsePackageManager('bun'), { code: 'ERR_PACKAGE_MANAGER' });
});

t.test('names', async (t) => {
  t.equal(envPrefixOf('OtherApp'), 'OTHER_APP_');
  t.equal(envPrefixOf('Lobby'), 'LOBBY_');
  t.equal(envPrefixOf('my_app2'), 'MY_APP2_');
  t.equal(projectNameOf('/x/My Chat Server'), 'my-chat-server');
  t.equal(projectNameOf('/x/@@@'), 'gatewayworker-app');
});
