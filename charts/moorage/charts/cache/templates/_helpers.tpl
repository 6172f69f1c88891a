{{- define "moorage-cache.selector" -}}
app.kubernetes.io/name: moorage-cache-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "moorage-cache.webhookService" -}}{{ .Release.Name }}-cache-webhook{{- end -}}
{{- define "moorage-cache.webhookSecret" -}}
{{- .Values.webhook.certificate.secretName | default (printf "%s-cache-webhook-tls" .Release.Name) -}}
{{- end -}}
