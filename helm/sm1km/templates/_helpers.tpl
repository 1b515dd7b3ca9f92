{{/* Chart name, truncated for labels. */}}
{{- define "sm1km.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name; <= 40 chars so "<fullname>-cron-scheduler" is a valid Service name. */}}
{{- define "sm1km.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains (include "sm1km.name" .) .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "sm1km.name" .) | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "sm1km.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sm1km.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sm1km.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sm1km.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sm1km.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "sm1km.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sm1km.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sm1km.notebookServiceAccountName" -}}
{{- default (printf "%s-notebook" (include "sm1km.fullname" .)) .Values.notebookRbac.serviceAccountName }}
{{- end }}

{{- define "sm1km.configName" -}}
{{- printf "%s-config" (include "sm1km.fullname" .) }}
{{- end }}

{{/* The run config with cluster forced to the scheduler given in $DASK_SCHEDULER_ADDRESS. */}}
{{- define "sm1km.runYaml" -}}
{{- $cfg := deepCopy .Values.runConfig }}
{{- $cluster := deepCopy (get $cfg "cluster" | default dict) }}
{{- $_ := set $cluster "kind" "address" }}
{{- $_ := unset $cluster "address" }}
{{- if .Values.tls.enabled }}
{{- $_ := set $cluster "security" (dict "tls" true) }}
{{- end }}
{{- $_ := set $cfg "cluster" $cluster }}
{{- toYaml $cfg }}
{{- end }}

{{/* requests/limits with every quantity quoted (the dask CRDs type quantities as strings).
     Input: dict "resources" <requests/limits map> "gpu" <int>. */}}
{{- define "sm1km.resources" -}}
{{- $res := deepCopy (.resources | default dict) }}
{{- if gt (int (.gpu | default 0)) 0 }}
{{- $limits := get $res "limits" | default dict }}
{{- $_ := set $limits "nvidia.com/gpu" (int .gpu) }}
{{- $_ := set $res "limits" $limits }}
{{- end }}
{{- range $section := list "requests" "limits" }}
{{- with get $res $section }}
{{ $section }}:
{{- range $k, $v := . }}
  {{ $k }}: {{ $v | toString | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* nodeSelector / tolerations / affinity of a component, falling back to the global ones.
     Input: dict "root" $ "c" <component values>. */}}
{{- define "sm1km.placement" -}}
{{- $v := .root.Values }}
{{- with (.c.nodeSelector | default $v.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.c.tolerations | default $v.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.c.affinity | default $v.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod-level fields shared by every pod: identity, hardening, scratch volume. */}}
{{- define "sm1km.podCommon" -}}
serviceAccountName: {{ include "sm1km.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "sm1km.scratchVolume" -}}
{{- $ed := dict }}
{{- with .Values.scratch.medium }}{{ $_ := set $ed "medium" . }}{{ end }}
{{- with .Values.scratch.sizeLimit }}{{ $_ := set $ed "sizeLimit" (toString .) }}{{ end -}}
- name: scratch
  emptyDir: {{ toJson $ed }}
{{- end }}

{{/* Container-level fields shared by the scheduler and worker containers.
     Input: dict "root" $ "address" <scheduler address or ""> "component" scheduler|worker. */}}
{{- define "sm1km.containerCommon" -}}
image: {{ include "sm1km.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml .root.Values.containerSecurityContext | nindent 2 }}
{{- with include "sm1km.env" . | trim }}
env:
  {{- . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The env list of a container: extraEnv, the dask TLS config, the scheduler address.
     Input: dict "root" $ "address" <scheduler address or ""> "component" <name>. */}}
{{- define "sm1km.env" -}}
{{- $v := .root.Values }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- if $v.tls.enabled }}
{{- include "sm1km.tlsEnv" . }}
{{- end }}
{{- with .address }}
- name: DASK_SCHEDULER_ADDRESS
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* ---- TLS ([14]): one per-release CA and certificate, mounted at /etc/sm1km-tls in every pod ---- */}}
{{- define "sm1km.tlsSecretName" -}}
{{- if eq .Values.tls.source "existing" }}{{ .Values.tls.existingSecret }}{{ else }}{{ printf "%s-tls" (include "sm1km.fullname" .) }}{{ end }}
{{- end }}

{{- define "sm1km.scheme" -}}
{{- if .Values.tls.enabled }}tls{{ else }}tcp{{ end }}
{{- end }}

{{/* Address of the scheduler Service of DaskCluster <name>. Input: dict "root" $ "name" <cluster name>. */}}
{{- define "sm1km.schedulerAddress" -}}
{{- printf "%s://%s-scheduler.%s.svc.cluster.local:8786" (include "sm1km.scheme" .root) .name .root.Release.Namespace }}
{{- end }}

{{/* dask config for TLS (the `dask` CLIs and every client read it): mutual TLS, encryption required.
     The scheduler also serves the HTTP API the dask operator calls (its RPC fallback cannot do TLS). */}}
{{- define "sm1km.tlsEnv" }}
- name: DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION
  value: "True"
- name: DASK_DISTRIBUTED__COMM__TLS__CA_FILE
  value: /etc/sm1km-tls/ca.crt
{{- range $role := list "CLIENT" "SCHEDULER" "WORKER" }}
- name: DASK_DISTRIBUTED__COMM__TLS__{{ $role }}__CERT
  value: /etc/sm1km-tls/tls.crt
- name: DASK_DISTRIBUTED__COMM__TLS__{{ $role }}__KEY
  value: /etc/sm1km-tls/tls.key
{{- end }}
{{- if eq .component "scheduler" }}
- name: DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES
  value: "['distributed.http.scheduler.prometheus', 'distributed.http.scheduler.info', 'distributed.http.scheduler.json', 'distributed.http.health', 'distributed.http.proxy', 'distributed.http.statics', 'distributed.http.scheduler.api']"
{{- end }}
{{- end }}

{{- define "sm1km.tlsArgs" -}}
{{- if .Values.tls.enabled }}
- --tls-ca-file
- /etc/sm1km-tls/ca.crt
- --tls-cert
- /etc/sm1km-tls/tls.crt
- --tls-key
- /etc/sm1km-tls/tls.key
{{- end }}
{{- end }}

{{- define "sm1km.tlsMount" -}}
{{- if .Values.tls.enabled }}
- {name: tls, mountPath: /etc/sm1km-tls, readOnly: true}
{{- end }}
{{- end }}

{{- define "sm1km.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "sm1km.tlsSecretName" . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "sm1km.envFrom" -}}
{{- with .Values.s3.existingSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end }}

{{- define "sm1km.scrapeAnnotations" -}}
{{- if .root.Values.monitoring.scrapeAnnotations }}
annotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ .port | quote }}
  prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* spec of a DaskCluster (also the cluster part of the DaskJob). Input: dict "root" $ "name" <cluster name>. */}}
{{- define "sm1km.clusterSpec" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $memLimit := "auto" }}
{{- with $v.worker.resources.limits }}{{ with .memory }}{{ $memLimit = toString . }}{{ end }}{{ end -}}
scheduler:
  metadata:
    labels:
      {{- include "sm1km.labels" $root | nindent 6 }}
      app.kubernetes.io/component: scheduler
    {{- with include "sm1km.scrapeAnnotations" (dict "root" $root "port" 8787) | trim }}{{ . | nindent 4 }}{{ end }}
  spec:
    {{- include "sm1km.podCommon" $root | nindent 4 }}
    {{- with include "sm1km.placement" (dict "root" $root "c" $v.scheduler) }}{{ . | nindent 4 }}{{ end }}
    containers:
      - name: scheduler
        {{- include "sm1km.containerCommon" (dict "root" $root "address" "" "component" "scheduler") | nindent 8 }}
        args:
          - dask
          - scheduler
          - --host
          - 0.0.0.0
          {{- if $v.tls.enabled }}
          - --protocol
          - tls
          {{- with include "sm1km.tlsArgs" $root | trim }}{{ . | nindent 10 }}{{ end }}
          {{- end }}
        ports:
          - {name: tcp-comm, containerPort: 8786, protocol: TCP}
          - {name: http-dashboard, containerPort: 8787, protocol: TCP}
        readinessProbe:
          httpGet: {port: http-dashboard, path: /health}
          initialDelaySeconds: 0
          periodSeconds: 2
          timeoutSeconds: 10
        livenessProbe:
          httpGet: {port: http-dashboard, path: /health}
          initialDelaySeconds: 15
          periodSeconds: 20
          timeoutSeconds: 10
        resources:
          {{- include "sm1km.resources" (dict "resources" $v.scheduler.resources) | trim | nindent 10 }}
        volumeMounts:
          - {name: scratch, mountPath: /tmp}
          {{- with include "sm1km.tlsMount" $root | trim }}{{ . | nindent 10 }}{{ end }}
    volumes:
      {{- include "sm1km.scratchVolume" $root | nindent 6 }}
      {{- with include "sm1km.tlsVolume" $root | trim }}{{ . | nindent 6 }}{{ end }}
  service:
    type: {{ $v.scheduler.serviceType }}
    selector:
      dask.org/cluster-name: {{ .name }}
      dask.org/component: scheduler
    ports:
      - {name: tcp-comm, protocol: TCP, port: 8786, targetPort: tcp-comm}
      - {name: http-dashboard, protocol: TCP, port: 8787, targetPort: http-dashboard}
worker:
  replicas: {{ ternary .replicas $v.worker.replicas (hasKey . "replicas") }}
  metadata:
    labels:
      {{- include "sm1km.labels" $root | nindent 6 }}
      app.kubernetes.io/component: worker
    {{- with include "sm1km.scrapeAnnotations" (dict "root" $root "port" 8788) | trim }}{{ . | nindent 4 }}{{ end }}
  spec:
    {{- include "sm1km.podCommon" $root | nindent 4 }}
    {{- with include "sm1km.placement" (dict "root" $root "c" $v.worker) }}{{ . | nindent 4 }}{{ end }}
    containers:
      - name: worker
        {{- include "sm1km.containerCommon" (dict "root" $root "address" (ternary (include "sm1km.schedulerAddress" (dict "root" $root "name" .name)) "" $v.tls.enabled) "component" "worker") | nindent 8 }}
        {{- with include "sm1km.envFrom" $root }}{{ . | nindent 8 }}{{ end }}
        args:
          - dask
          - worker
          - --nthreads
          - {{ $v.worker.nthreads | quote }}
          - --memory-limit
          - {{ $memLimit | quote }}
          - --name
          - $(DASK_WORKER_NAME)
          - --dashboard
          - --dashboard-address
          - "8788"
          - --worker-port
          - "8789"
          - --nanny-port
          - "8790"
          {{- with include "sm1km.tlsArgs" $root | trim }}{{ . | nindent 10 }}{{ end }}
          {{- range $v.worker.extraArgs }}
          - {{ . | quote }}
          {{- end }}
        ports:
          - {name: http-dashboard, containerPort: 8788, protocol: TCP}
          - {name: tcp-worker, containerPort: 8789, protocol: TCP}
          - {name: tcp-nanny, containerPort: 8790, protocol: TCP}
        resources:
          {{- include "sm1km.resources" (dict "resources" $v.worker.resources "gpu" $v.worker.gpu) | trim | nindent 10 }}
        volumeMounts:
          - {name: scratch, mountPath: /tmp}
          {{- with include "sm1km.tlsMount" $root | trim }}{{ . | nindent 10 }}{{ end }}
    volumes:
      {{- include "sm1km.scratchVolume" $root | nindent 6 }}
      {{- with include "sm1km.tlsVolume" $root | trim }}{{ . | nindent 6 }}{{ end }}
{{- end }}

{{/* Pod spec of the runner (DaskJob runner or CronJob). Input: dict "root" $ "schedulerAddress" <addr or "">
     and optionally "args" (sm1km arguments; default job.args). */}}
{{- define "sm1km.runnerPodSpec" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
restartPolicy: Never
{{ include "sm1km.podCommon" $root }}
{{- with include "sm1km.placement" (dict "root" $root "c" $v.job) }}{{ . | nindent 0 }}{{ end }}
containers:
  - name: runner
    image: {{ include "sm1km.image" $root }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    securityContext:
      {{- toYaml $v.containerSecurityContext | nindent 6 }}
    args:
      - sm1km
      {{- range (.args | default $v.job.args) }}
      - {{ . | quote }}
      {{- end }}
    {{- with include "sm1km.env" (dict "root" $root "address" .schedulerAddress "component" "runner") | trim }}
    env:
      {{- . | nindent 6 }}
    {{- end }}
    {{- with include "sm1km.envFrom" $root }}{{ . | nindent 4 }}{{ end }}
    resources:
      {{- include "sm1km.resources" (dict "resources" $v.job.resources) | trim | nindent 6 }}
    volumeMounts:
      - {name: config, mountPath: /etc/sm1km, readOnly: true}
      - {name: scratch, mountPath: /tmp}
      {{- with include "sm1km.tlsMount" $root | trim }}{{ . | nindent 6 }}{{ end }}
volumes:
  - name: config
    configMap:
      name: {{ include "sm1km.configName" $root }}
  {{- include "sm1km.scratchVolume" $root | nindent 2 }}
  {{- with include "sm1km.tlsVolume" $root | trim }}{{ . | nindent 2 }}{{ end }}
{{- end }}
