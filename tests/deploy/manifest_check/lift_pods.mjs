// Turns the chart's rendered manifest into what `podman kube play` runs, for
// tests/deploy/kube_play_test.sh. Podman plays Pods, ConfigMaps and volumes but ignores
// StatefulSets and Services, so the StatefulSets' pod templates are lifted into Pods, as the
// StatefulSet controller would make them:
// - pod i of StatefulSet S is named S-i, and its POD_NAME (the downward API) is that name;
// - the coordinator's pod takes its Service's name instead, because podman's DNS resolves pod
//   names: the workers' --coordinator=<Service>:<port> then reaches it, as in a cluster;
// - a Secret is written to its own file: podman 4.3 reads a secret volume from a podman secret
//   whose content is the Secret's YAML (`podman secret create NAME FILE`);
// - podman 4.3 does not expand $(VAR) in args, which the kubelet does: the lift expands the
//   variables it sets itself (POD_NAME);
// - restartPolicy Never, so that the test sees each process end once (a StatefulSet restarts
//   its pods);
// - podman 4.3 makes an emptyDir a named volume, shared by every pod whose volume has that
//   name: a pod's emptyDirs are renamed <pod>-<volume>, so that each pod has its own, as in
//   Kubernetes.
// Everything else of the pod templates (commands, flags, env, mounts, ports, securityContext)
// is kept as rendered: that is what the test checks.
//   node lift_pods.mjs MANIFEST.yaml OUT_DIR  -> OUT_DIR/pods.yaml, OUT_DIR/secret-NAME.yaml
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseAllDocuments, stringify } from "yaml";

const [manifestPath, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const objects = parseAllDocuments(readFileSync(manifestPath, "utf8"))
  .map((doc) => doc.toJSON())
  .filter((o) => o !== null);

const services = objects.filter((o) => o.kind === "Service" && o.spec.clusterIP !== "None");
const played = [];
for (const o of objects) {
  if (o.kind === "ConfigMap") played.push(o);
  if (o.kind === "Secret") {
    writeFileSync(path.join(out, `secret-${o.metadata.name}.yaml`), stringify(o));
  }
  if (o.kind !== "StatefulSet") continue;
  const selector = o.spec.selector.matchLabels;
  const service = services.find((s) =>
    Object.entries(s.spec.selector).every(([k, v]) => selector[k] === v));
  for (let i = 0; i < o.spec.replicas; i++) {
    const name = service ? service.metadata.name : `${o.metadata.name}-${i}`;
    const spec = structuredClone(o.spec.template.spec);
    spec.restartPolicy = "Never";
    const emptyDirs = new Set((spec.volumes || []).filter((v) => v.emptyDir).map((v) => v.name));
    for (const volume of spec.volumes || []) {
      if (emptyDirs.has(volume.name)) volume.name = `${name}-${volume.name}`;
    }
    for (const container of spec.containers) {
      for (const mount of container.volumeMounts || []) {
        if (emptyDirs.has(mount.name)) mount.name = `${name}-${mount.name}`;
      }
    }
    for (const container of spec.containers) {
      for (const env of container.env || []) {
        if (env.valueFrom?.fieldRef?.fieldPath === "metadata.name") {
          delete env.valueFrom;
          env.value = name;
          container.args = (container.args || []).map((a) => a.replaceAll(`$(${env.name})`, name));
        }
      }
    }
    played.push({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, labels: o.spec.template.metadata.labels },
      spec,
    });
  }
}
writeFileSync(path.join(out, "pods.yaml"), played.map((o) => stringify(o)).join("---\n"));
