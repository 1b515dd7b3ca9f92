{{/* Checks across keys that values.schema.json cannot express; `helm lint/template/install` fail with the message. */}}
{{- define "sm1km.validate" -}}
{{- $v := .Values }}
{{- if and $v.autoscaler.enabled (gt (int $v.autoscaler.minimum) (int $v.autoscaler.maximum)) }}
{{- fail (printf "autoscaler.minimum (%d) is larger than autoscaler.maximum (%d)" (int $v.autoscaler.minimum) (int $v.autoscaler.maximum)) }}
{{- end }}
{{- $device := "cpu" }}
{{- with $v.runConfig.model }}{{ with .predict_device }}{{ $device = . }}{{ end }}{{ end }}
{{- if and (gt (int $v.worker.gpu) 0) (ne $device "cuda") }}
{{- fail "worker.gpu > 0 but runConfig.model.predict_device is not cuda: the GPUs would sit idle (set predict_device: cuda or worker.gpu: 0)" }}
{{- end }}
{{- if and (eq $device "cuda") (eq (int $v.worker.gpu) 0) }}
{{- fail "runConfig.model.predict_device is cuda but worker.gpu is 0: workers would have no GPU (set worker.gpu: 1)" }}
{{- end }}
{{- with $v.runConfig.cluster }}{{ with .kubernetes }}
{{- fail "runConfig.cluster.kubernetes is not used by the chart (the chart creates the cluster): size it with scheduler/worker values" }}
{{- end }}{{ end }}
{{- end }}
