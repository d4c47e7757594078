// testcontainers-node against podbridge, with the library's default settings (nothing but
// DOCKER_HOST): a network, redis on it with a log wait strategy, a file copied in before start, a
// PING round trip over the mapped port, exec, a second container reaching redis by its network
// alias, a copy in after start and a copy out. Then the process exits without stopping anything:
// only Ryuk may remove what is left. Prints what the caller checks afterwards.
import net from "node:net";
import { GenericContainer, Network, Wait } from "testcontainers";
import tar from "tar-stream";

const check = (condition, message) => {
  if (!condition) throw new Error(message);
};

const network = await new Network().start();
const redis = await new GenericContainer("redis:latest")
  .withExposedPorts(6379)
  .withNetwork(network)
  .withNetworkAliases("cache")
  .withCopyContentToContainer([{ content: "before-start\n", target: "/data/before.txt" }])
  .withWaitStrategy(Wait.forLogMessage(/Ready to accept connections/))
  .withStartupTimeout(120_000)
  .start();
const reply = await new Promise((resolve, reject) => {
  const socket = net.connect(redis.getMappedPort(6379), redis.getHost(), () => socket.write("PING\r\n"));
  socket.setTimeout(10_000, () => reject(new Error("timeout")));
  socket.on("data", (data) => { resolve(data.toString()); socket.end(); });
  socket.on("error", reject);
});
check(reply === "+PONG\r\n", `unexpected reply ${JSON.stringify(reply)}`);

const ping = await redis.exec(["redis-cli", "ping"]);
check(ping.exitCode === 0 && ping.output.trim() === "PONG", `exec: ${JSON.stringify(ping)}`);

const peer = await new GenericContainer("busybox:latest")
  .withNetwork(network)
  .withCommand(["sh", "-c", "printf 'PING\\r\\n' | nc cache 6379; sleep 600"])
  .withWaitStrategy(Wait.forLogMessage(/\+PONG/))
  .start();

await redis.copyContentToContainer([{ content: "after-start\n", target: "/data/after.txt" }]);
const cat = await redis.exec(["cat", "/data/before.txt", "/data/after.txt"]);
check(cat.output === "before-start\nafter-start\n", `copy in: ${JSON.stringify(cat.output)}`);

const archive = await redis.copyArchiveFromContainer("/data/before.txt");
const copied = await new Promise((resolve, reject) => {
  const extract = tar.extract();
  let content = "";
  extract.on("entry", (_header, stream, next) => {
    stream.on("data", (chunk) => { content += chunk.toString(); });
    stream.on("end", next);
    stream.resume();
  });
  extract.on("finish", () => resolve(content));
  extract.on("error", reject);
  archive.pipe(extract);
});
check(copied === "before-start\n", `copy out: ${JSON.stringify(copied)}`);

console.log(`container=${redis.getId()} reply=${JSON.stringify(reply)}`);
console.log(`leftover=${redis.getId()}`);
console.log(`peer=${peer.getId()}`);
console.log(`network=${network.getId()}`);
process.exit(0);
