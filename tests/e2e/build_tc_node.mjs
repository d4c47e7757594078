// testcontainers-node building an image through podbridge with its defaults: fromDockerfile()
// tags it localhost/<uuid>:<uuid>, waits for the stream's end and inspects the tag.
import { GenericContainer, Wait } from "testcontainers";

const [context, web] = process.argv.slice(2);
// a built web server answering on its mapped port
const server = await (await GenericContainer.fromDockerfile(web).build())
  .withExposedPorts(8080)
  .withWaitStrategy(Wait.forListeningPorts())
  .withStartupTimeout(60_000)
  .start();
const page = await (await fetch(`http://${server.getHost()}:${server.getMappedPort(8080)}/`)).text();
if (!page.includes("hello from the built web image")) throw new Error(`page: ${page}`);
await server.stop();
const image = await GenericContainer.fromDockerfile(context)
  .withBuildArgs({ GREETING: "tc-node" })
  .withTarget("final")
  .build();
const container = await image
  .withCommand(["echo started; sleep 30"])
  .withWaitStrategy(Wait.forLogMessage("started"))
  .withStartupTimeout(60_000)
  .start();
const { output, exitCode } = await container.exec(["cat", "/srv/greeting"]);
if (exitCode !== 0 || !output.includes("tc-node from the builder stage")) throw new Error(`exec: ${exitCode} ${output}`);
await container.stop();
console.log("ok tc-node build, run, exec");
