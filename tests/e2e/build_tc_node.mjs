// testcontainers-node building an image through podbridge with its defaults: fromDockerfile()
// tags it localhost/<uuid>:<uuid>, waits for the stream's end and inspects the tag.
import { GenericContainer, Wait } from "testcontainers";

const context = process.argv[2];
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
