{{/*
The pod template every upmon service shares: its image, its config file from the ConfigMap
<fullname>-<component> at /etc/upmon/<component>.yaml, the ClickHouse password from its Secret
(when `clickhouse` is true), POD_NAME/POD_NAMESPACE, probes on /healthz and /readyz, restricted
security, a small /tmp. Call with
  (dict "ctx" $ "component" "ingest" "values" .Values.ingest "args" (list ...) "clickhouse" true
        "token" true "restartPolicy" "")
*/}}
{{- define "upmon.podTemplate" -}}
{{- $ctx := .ctx -}}
{{- $v := .values -}}
{{- $name := include "upmon.componentName" (dict "ctx" $ctx "component" .component) -}}
metadata:
  labels:
    {{- include "upmon.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
  annotations:
    # A changed configuration rolls the pods (a service reads its file once, at start).
    checksum/config: {{ include (print $ctx.Template.BasePath "/" .component "-configmap.yaml") $ctx | sha256sum }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ $name }}
  # Only the services that call the Kubernetes API (Lease, topology) get a token.
  automountServiceAccountToken: {{ .token }}
  # No docker-link variables: Services named <release>-clickhouse or -kafka would inject
  # UPMON_CLICKHOUSE_PORT_..., UPMON_KAFKA_SERVICE_HOST, which the services' strict UPMON_*
  # overrides refuse (unknown key) and stop at start.
  enableServiceLinks: false
  {{- with $ctx.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .restartPolicy }}
  restartPolicy: {{ . }}
  {{- end }}
  securityContext:
    {{- include "upmon.podSecurityContext" . | nindent 4 }}
  # Shutdown is bounded (flush, commit, release the Lease) well inside this.
  terminationGracePeriodSeconds: 30
  containers:
    - name: {{ .component }}
      image: {{ include "upmon.image" (dict "ctx" $ctx "image" $v.image) }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      command: [upmon-{{ .component }}]
      args:
        - --config
        - /etc/upmon/{{ .component }}.yaml
        {{- range .args }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        {{- if .clickhouse }}
        - name: UPMON_CLICKHOUSE_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ include "upmon.clickhouse.secretName" $ctx }}
              key: {{ include "upmon.clickhouse.secretKey" $ctx }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ int $v.port }}
          protocol: TCP
      {{- if not .restartPolicy }}
      startupProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 2
        failureThreshold: 60
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 10
        timeoutSeconds: 3
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 3
      {{- end }}
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      securityContext:
        {{- include "upmon.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/upmon
          readOnly: true
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: config
      configMap:
        name: {{ $name }}
    # The root filesystem is read-only; libraries that want a scratch file get /tmp.
    - name: tmp
      emptyDir:
        sizeLimit: 16Mi
  affinity:
    {{- if $v.affinity }}
    {{- toYaml $v.affinity | nindent 4 }}
    {{- else }}
    {{- include "upmon.spreadAffinity" (dict "ctx" $ctx "component" .component) | nindent 4 }}
    {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* A Deployment of one service. Call like upmon.podTemplate, plus "replicas". */}}
{{- define "upmon.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "upmon.componentName" (dict "ctx" .ctx "component" .component) }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "upmon.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  replicas: {{ .replicas }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # One pod at a time: ingest rebalances its partitions, the analyzer hands its Lease over.
      maxUnavailable: 1
      maxSurge: 0
  selector:
    matchLabels:
      {{- include "upmon.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
  template:
    {{- include "upmon.podTemplate" . | nindent 4 }}
{{- end -}}

{{/* The ClusterIP Service of one service's HTTP port (metrics, probes). */}}
{{- define "upmon.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "upmon.componentName" (dict "ctx" .ctx "component" .component) }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "upmon.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "upmon.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  ports:
    - name: http
      port: {{ int .port }}
      targetPort: http
      protocol: TCP
{{- end -}}

{{- define "upmon.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "upmon.componentName" (dict "ctx" .ctx "component" .component) }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "upmon.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
automountServiceAccountToken: false
{{- end -}}

{{- define "upmon.pdb" -}}
{{- if and .values.pdb.enabled (gt (int .values.replicas) 1) }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "upmon.componentName" (dict "ctx" .ctx "component" .component) }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "upmon.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "upmon.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end }}
{{- end -}}
