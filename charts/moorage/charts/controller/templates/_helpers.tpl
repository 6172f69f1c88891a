{{- define "moorage-controller.name" -}}moorage-controller{{- end -}}

{{- define "moorage-controller.selector" -}}
app.kubernetes.io/name: moorage-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "moorage-controller.webhookService" -}}moorage-operator{{- end -}}
