// Worker script for workerpool.
import workerpool from "workerpool"
import { noop, spin } from "./work.ts"

workerpool.worker({ noop, spin })
