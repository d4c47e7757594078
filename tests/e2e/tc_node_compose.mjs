// testcontainers-node's DockerComposeEnvironment (which runs `docker compose`) on
// compose/compose.yaml: health-check wait, a published port, exec in a service, then down.
import { DockerComposeEnvironment, Wait } from "testcontainers";

const env = await new DockerComposeEnvironment(process.argv[2], "compose.yaml")
  .withWaitStrategy("redis-1", Wait.forHealthCheck())
  .up();
const web = env.getContainer("web-1");
const body = await (await fetch(`http://${web.getHost()}:${web.getMappedPort(80)}/index.html`)).text();
if (body !== "hello-compose\n") throw new Error(`unexpected body ${JSON.stringify(body)}`);
const ping = await env.getContainer("redis-1").exec(["redis-cli", "ping"]);
if (ping.output.trim() !== "PONG" || ping.exitCode !== 0) throw new Error(JSON.stringify(ping));
console.log(`web=${JSON.stringify(body)} exec=${ping.output.trim()}`);
await env.down();
console.log("down");
