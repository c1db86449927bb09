import { render } from 'preact';
import 'uplot/dist/uPlot.min.css';
import './styles.css';
import { App, browserEnv } from './components/App';

render(<App env={browserEnv()} />, document.getElementById('app')!);
