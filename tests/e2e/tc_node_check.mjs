// testcontainers-node against podbridge: redis with a log wait strategy, a PING round trip over
// the mapped port, stop; Ryuk (unless TESTCONTAINERS_RYUK_DISABLED) reaps a container left behind.
import net from "node:net";
import { GenericContainer, Wait } from "testcontainers";

const redis = await new GenericContainer("redis:latest")
  .withExposedPorts(6379)
  .withWaitStrategy(Wait.forLogMessage(/Ready to accept connections/))
  .withStartupTimeout(120_000)
  .start();
const reply = await new Promise((resolve, reject) => {
  const socket = net.connect(redis.getMappedPort(6379), redis.getHost(), () => socket.write("PING\r\n"));
  socket.setTimeout(10_000, () => reject(new Error("timeout")));
  socket.on("data", (data) => { resolve(data.toString()); socket.end(); });
  socket.on("error", reject);
});
if (reply !== "+PONG\r\n") throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
console.log(`container=${redis.getId()} reply=${JSON.stringify(reply)}`);
await redis.stop();
const leftover = await new GenericContainer("busybox:latest").withCommand(["sleep", "600"]).start();
console.log(`leftover=${leftover.getId()}`);
process.exit(0);
