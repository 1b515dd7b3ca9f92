{{/* Checks across keys that values.schema.json cannot express. `helm template/install/upgrade` fail
     with the message (`helm lint` only reports it, as INFO "funcMap fail"). */}}
{{- define "sm1km.validate" -}}
{{- $v := .Values }}
{{- if and $v.autoscaler.enabled (gt (int $v.autoscaler.minimum) (int $v.autoscaler.maximum)) }}
{{- fail (printf "autoscaler.minimum (%d) is larger than autoscaler.maximum (%d)" (int $v.autoscaler.minimum) (int $v.autoscaler.maximum)) }}
{{- end }}
{{- if and (ne $v.scheduler.serviceType "ClusterIP") (not $v.scheduler.allowExternalService) }}
{{- fail (printf "scheduler.serviceType %s would expose the Dask scheduler (which runs code with the S3 credentials) outside the cluster; keep ClusterIP or set scheduler.allowExternalService: true (docs/security.md)" $v.scheduler.serviceType) }}
{{- end }}
{{- if and (ne $v.scheduler.serviceType "ClusterIP") (not $v.tls.enabled) }}
{{- fail (printf "scheduler.serviceType %s needs tls.enabled: an external scheduler without TLS lets anyone run code on the workers" $v.scheduler.serviceType) }}
{{- end }}
{{- if and $v.tls.enabled (eq $v.tls.source "existing") (not $v.tls.existingSecret) }}
{{- fail "tls.source is existing but tls.existingSecret is empty: name a Secret with ca.crt, tls.crt and tls.key" }}
{{- end }}
{{- if and $v.tls.existingSecret (ne $v.tls.source "existing") }}
{{- fail (printf "tls.existingSecret is set but tls.source is %s: set tls.source: existing to use it" $v.tls.source) }}
{{- end }}
{{- end }}
